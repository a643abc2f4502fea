//! # tasker-store
//!
//! The two backends of [`tasker_core::store::Store`], alike in shape: each has the same
//! modules, named after the tables they work on (`templates`, `tasks`, `steps`,
//! `queue`, `transitions`), and its own migrations. All of Tasker's SQL lives here.
//!
//! - [`sqlite`]: the embedded store — one process, one file (or `:memory:`).

pub mod sqlite;

mod operations;
mod primitives;
mod rows;
