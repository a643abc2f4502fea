//! # tasker-store
//!
//! The two backends of [`tasker_core::store::Store`], alike in shape: each has the same
//! modules, named after the tables they work on (`templates`, `tasks`, `steps`,
//! `queue`, `transitions`), and its own migrations. All of Tasker's SQL lives here.
//!
//! - [`sqlite`]: the embedded store — one process, one file (or `:memory:`).
//! - [`postgres`]: the distributed store — PostgreSQL with pgmq, many processes.
//!
//! The state-changing operations are written once (`operations`) over the small
//! row and queue operations each backend provides (`primitives`).

pub mod postgres;
pub mod sqlite;

mod operations;
mod primitives;
mod rows;
