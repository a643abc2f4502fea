//! `tasker`: run workflows on the embedded store, or operate a distributed Tasker on
//! PostgreSQL: submit, inspect, wait for, cancel, retry and resolve tasks.

#[cfg(feature = "alloc-counter")]
#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

fn main() -> std::process::ExitCode {
    tasker_cli::run()
}
