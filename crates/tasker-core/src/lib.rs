//! # tasker-core
//!
//! The domain of Tasker, with no I/O beyond reading template files: everything here is
//! shared by both stores, the engine, the CLI and the Ruby bindings.
//!
//! - [`template`]: YAML templates, validated into a DAG of steps with their defaults.
//! - [`state`]: the task and step state machines; illegal transitions are errors.
//! - [`readiness`]: which steps may run now — a pure function of one task's states.
//! - [`backoff`]: retry decisions and exponential backoff with jitter.
//! - [`message`]: what travels on the queues, decoded without copying; [`encode`]: the
//!   reused buffers messages are written into; [`borrowed`]: strings decoded as views.
//! - [`store`]: the [`Store`](store::Store) trait, the one seam between the engine and a database.
//! - [`event`]: the process-wide event bus.
//! - [`intern`]: the bounded string interner for names that repeat.
//! - `memory` (feature `alloc-counter`): the counting allocator and `MemoryProfiler`.

pub mod backoff;
pub mod borrowed;
pub mod duration;
pub mod encode;
pub mod event;
pub mod fan_out;
pub mod file;
pub mod id;
pub mod intern;
pub mod json_path;
#[cfg(feature = "alloc-counter")]
pub mod memory;
pub mod message;
pub mod names;
pub mod rate;
pub mod readiness;
pub mod schedule;
pub mod state;
pub mod store;
pub mod template;
pub mod time;
pub mod views;

pub use id::{StepId, TaskId};
pub use state::{StepState, TaskState};
pub use time::Timestamp;
