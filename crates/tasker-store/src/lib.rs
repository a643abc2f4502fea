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
//! row and queue operations each backend provides (`primitives`, one trait per table,
//! implemented in the backend's file of that table), and the `Store` methods once
//! (`store_impl!`) over each backend's transaction and connection.

/// The [`Store`](tasker_core::store::Store) methods, written once for both backends.
/// Expanded in a backend's module, which imports `tasker_core::store::*` and defines
/// two macros: `write!(store, |p| op)` runs `op` over the backend's primitives in one
/// write transaction, and `read!(store, |c| query)` runs `query` on one connection.
/// `$extra` are the methods whose backends differ.
macro_rules! store_impl {
    ($store:ty { $($extra:tt)* }) => {
        impl Store for $store {
            async fn template_register(
                &self,
                template: &tasker_core::template::TaskTemplate,
            ) -> StoreResult<Registration> {
                write!(self, |p| $crate::operations::template_register(p, template))
            }

            fn write_transactions(&self) -> u64 {
                self.writes.load(std::sync::atomic::Ordering::Relaxed)
            }

            async fn task_create(&self, params: TaskCreateParams<'_>) -> StoreResult<TaskCreated> {
                write!(self, |p| $crate::operations::task_create(p, params))
            }

            async fn task_create_batch(
                &self,
                batch: &[TaskCreateParams<'_>],
            ) -> StoreResult<Vec<TaskCreated>> {
                write!(self, |p| $crate::operations::task_create_batch(p, batch))
            }

            async fn task_start(&self, params: TaskStartParams) -> StoreResult<TaskStarted> {
                write!(self, |p| $crate::operations::task_start(p, params))
            }

            async fn task_start_batch(
                &self,
                limit: u32,
                visibility: std::time::Duration,
                new_trace: Option<tasker_core::store::NewTrace>,
            ) -> StoreResult<TasksStarted> {
                write!(self, |p| $crate::operations::task_start_batch(
                    p, limit, visibility, new_trace
                ))
            }

            async fn task_cancel(
                &self,
                task_id: tasker_core::id::TaskId,
                reason: &str,
            ) -> StoreResult<tasker_core::state::TaskState> {
                write!(self, |p| $crate::operations::task_cancel(p, task_id, reason))
            }

            async fn task_signal(
                &self,
                task_id: tasker_core::id::TaskId,
                name: &str,
                payload: &serde_json::value::RawValue,
            ) -> StoreResult<Signalled> {
                write!(self, |p| $crate::operations::task_signal(p, task_id, name, payload))
            }

            async fn task_retry(&self, task_id: tasker_core::id::TaskId) -> StoreResult<usize> {
                write!(self, |p| $crate::operations::task_retry(p, task_id))
            }

            async fn task_get(&self, task_id: tasker_core::id::TaskId) -> StoreResult<TaskDetail> {
                read!(self, |c| tasks::get(c, task_id))
            }

            async fn task_record(
                &self,
                task_id: tasker_core::id::TaskId,
            ) -> StoreResult<TaskRecord> {
                read!(self, |c| tasks::record(c, task_id))
            }

            async fn task_progress(
                &self,
                task_id: tasker_core::id::TaskId,
            ) -> StoreResult<TaskProgress> {
                read!(self, |c| tasks::progress(c, task_id))
            }

            async fn template_list(
                &self,
                params: TemplateListParams<'_>,
            ) -> StoreResult<Vec<TemplateRecord>> {
                read!(self, |c| templates::list(c, params))
            }

            async fn task_list(&self, params: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
                read!(self, |c| tasks::list(c, params))
            }

            async fn task_counts(
                &self,
                filter: TaskFilter<'_>,
            ) -> StoreResult<Vec<(tasker_core::state::TaskState, u64)>> {
                read!(self, |c| tasks::counts(c, filter))
            }

            async fn task_list_unfinished(&self) -> StoreResult<Vec<tasker_core::id::TaskId>> {
                read!(self, |c| tasks::list_unfinished(c))
            }

            async fn step_start(&self, params: StepStartParams<'_>) -> StoreResult<StepStart> {
                write!(self, |p| $crate::operations::step_start(p, params))
            }

            async fn step_claim(&self, params: ClaimParams<'_>) -> StoreResult<Claimed> {
                write!(self, |p| $crate::operations::step_claim(p, params))
            }

            async fn step_finish(&self, params: StepFinishParams<'_>) -> StoreResult<StepFinished> {
                write!(self, |p| $crate::operations::step_finish(p, params))
            }

            async fn step_finish_batch(
                &self,
                batch: &[StepFinishParams<'_>],
                claims: &[ClaimParams<'_>],
            ) -> StoreResult<FinishedBatch> {
                write!(self, |p| $crate::operations::step_finish_batch(p, batch, claims))
            }

            async fn step_resolve(
                &self,
                step_id: tasker_core::id::StepId,
                results: &serde_json::value::RawValue,
            ) -> StoreResult<StepResolved> {
                write!(self, |p| $crate::operations::step_resolve(p, step_id, results))
            }

            async fn task_prune(
                &self,
                before: tasker_core::time::Timestamp,
                limit: u32,
            ) -> StoreResult<Pruned> {
                write!(self, |p| $crate::primitives::TaskRows::tasks_prune(p, before, limit))
            }

            async fn step_ancestors(
                &self,
                step_id: tasker_core::id::StepId,
            ) -> StoreResult<Vec<(std::sync::Arc<str>, Box<serde_json::value::RawValue>)>> {
                read!(self, |c| steps::ancestors(c, step_id))
            }

            async fn transition_list(
                &self,
                task_id: tasker_core::id::TaskId,
            ) -> StoreResult<Vec<TransitionRecord>> {
                read!(self, |c| transitions::list(c, task_id))
            }

            async fn queue_list(&self) -> StoreResult<Vec<String>> {
                read!(self, |c| queue::list(c))
            }

            // Outside a transaction: the read is one statement, which commits by itself.
            async fn queue_read(
                &self,
                queue: &str,
                visibility: std::time::Duration,
                limit: u32,
            ) -> StoreResult<QueueBatch> {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                read!(self, |c| queue::read(c, queue, visibility, limit))
            }

            async fn queue_depths(&self) -> StoreResult<Vec<QueueDepth>> {
                read!(self, |c| queue::depths(c))
            }

            async fn queue_dead_letter(
                &self,
                queue: &str,
                msg_id: i64,
                reason: &str,
            ) -> StoreResult<()> {
                write!(self, |p| $crate::primitives::QueueOps::queue_dead_letter(
                    p, queue, msg_id, reason
                ))
            }

            async fn queue_dead_letters(&self, queue: &str) -> StoreResult<Vec<DeadLetter>> {
                read!(self, |c| queue::dead_letters(c, queue))
            }

            async fn queue_dead_letter_queues(&self) -> StoreResult<Vec<String>> {
                read!(self, |c| queue::dead_letter_queues(c))
            }

            async fn queue_pause(&self, queue: &str, paused: bool) -> StoreResult<bool> {
                write!(self, |p| $crate::primitives::QueueOps::queue_set_paused(
                    p, queue, paused
                ))
            }

            async fn queue_paused(&self) -> StoreResult<Vec<String>> {
                read!(self, |c| queue::paused(c))
            }

            async fn template_pause(
                &self,
                namespace: &str,
                name: &str,
                paused: bool,
            ) -> StoreResult<bool> {
                write!(self, |p| $crate::operations::template_pause(p, namespace, name, paused))
            }

            async fn template_paused(&self) -> StoreResult<Vec<(String, String)>> {
                read!(self, |c| templates::paused(c))
            }

            async fn tasks_held(&self) -> StoreResult<HeldSteps> {
                read!(self, |c| tasks::held(c))
            }

            async fn schedule_create(
                &self,
                params: ScheduleCreate<'_>,
            ) -> StoreResult<ScheduleRecord> {
                write!(self, |p| $crate::operations::schedule_create(p, params))
            }

            async fn schedule_list(&self) -> StoreResult<Vec<ScheduleRecord>> {
                read!(self, |c| schedules::list(c))
            }

            async fn schedule_pause(&self, name: &str, paused: bool) -> StoreResult<bool> {
                write!(self, |p| $crate::operations::schedule_pause(p, name, paused))
            }

            async fn schedule_delete(&self, name: &str) -> StoreResult<()> {
                write!(self, |p| $crate::operations::schedule_delete(p, name))
            }

            fn wakeups(&self) -> &Wakeups {
                &self.wakeups
            }

            $($extra)*
        }
    };
}

pub mod postgres;
pub mod sqlite;

mod operations;
mod primitives;
mod rows;
