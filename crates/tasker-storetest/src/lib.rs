//! # tasker-storetest
//!
//! One suite of tests that every [`Store`] backend must pass, in two tiers:
//!
//! - [`store_cases`]: the trait's contract, driven by hand — transactions, state
//!   machines, the queue's visibility, read counts and dead letters.
//! - [`workflow_cases`]: the engine end to end on the store — the reference workflows
//!   of `examples/`, retries, timeouts, failures, cancellation, operator actions.
//! - [`signal_cases`]: steps that wait for a signal.
//! - [`fan_out_cases`]: steps that fan out over data (`for_each`).
//! - [`schedule_cases`]: schedules, their ticks and catch-up.
//!
//! A backend runs the suite with [`conformance_tests!`], giving an async function
//! that returns a fresh, isolated store (or `None`, after printing why, to skip):
//!
//! ```ignore
//! async fn fresh() -> Option<tasker_storetest::Fixture<SqliteStore>> { ... }
//! tasker_storetest::conformance_tests!(fresh);
//! ```

pub mod fan_out_cases;
pub mod schedule_cases;
pub mod signal_cases;
pub mod store_cases;
pub mod support;
pub mod workflow_cases;

use std::any::Any;
use std::sync::Arc;

use tasker_core::store::Store;

/// A fresh store for one test, with whatever keeps it alive (a temp dir, a schema).
pub struct Fixture<S> {
    pub store: Arc<S>,
    pub guard: Box<dyn Any + Send + Sync>,
}

impl<S: Store> Fixture<S> {
    pub fn new(store: S, guard: impl Any + Send + Sync) -> Self {
        Self {
            store: Arc::new(store),
            guard: Box::new(guard),
        }
    }
}

/// Expands to one `#[tokio::test]` per case of the suite, each on a store from `$fresh`.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@cases $fresh, store_cases: [
            template_registration_is_immutable,
            idempotency_key_returns_the_same_task,
            a_task_runs_through_the_store,
            parents_results_reach_children,
            ancestors_are_read_up_the_edges,
            parents_finishing_together_enqueue_their_child_once,
            queue_visibility_and_read_count,
            only_a_partial_read_looks_for_the_next_message,
            retry_is_delayed_and_counts_attempts,
            a_lost_worker_is_reclaimed_then_dead_lettered,
            a_stale_finish_changes_nothing,
            permanent_failure_blocks_descendants_and_resolve_unblocks,
            operator_retry_reruns_failed_steps,
            cancel_stops_every_unfinished_step,
            illegal_transitions_are_refused,
            unparseable_messages_are_dead_lettered,
            task_listing_filters_and_pages,
            templates_are_listed_with_their_definitions,
            queue_depths_count_messages,
            batches_start_claim_and_finish_many_at_once,
            tasks_created_together_share_a_transaction,
            a_failed_batch_changes_nothing,
            finishing_claims_the_slots_it_frees,
            prune_removes_old_finished_tasks_in_batches,
            a_paused_queue_delivers_nothing_until_resumed,
            a_paused_templates_tasks_wait_until_it_is_resumed,
            a_concurrency_key_holds_tasks_beyond_its_limit,
            a_rate_limit_books_tokens_and_holds_back_the_rest,
            a_queue_hands_out_higher_priorities_first,
            step_messages_carry_their_tasks_trace_context,
        ]);
        $crate::conformance_tests!(@cases $fresh, workflow_cases: [
            linear_passes_values_along_the_chain,
            diamond_joins_both_branches,
            tree_converges_eight_steps,
            mixed_dag_fans_out_transforms_and_fans_in,
            order_fulfillment_runs_in_order,
            context_is_checked_against_the_schema,
            retry_then_succeed,
            retries_exhausted_fails_the_task,
            permanent_failure_blocks_only_descendants,
            timeout_cuts_off_each_attempt,
            requested_retry_delay_is_honoured,
            a_panicking_handler_is_retried,
            unknown_handler_fails_permanently,
            handlers_read_their_ancestors_results,
            a_decision_runs_its_choice_and_skips_the_rest,
            a_decision_outside_its_choices_fails,
            shipping_tier_follows_the_context,
            resolving_a_decider_decides,
            skipped_steps_stay_skipped,
            cancellation_stops_a_running_task,
            operator_resolution_lets_children_proceed,
            operator_retry_resumes_the_task,
            concurrency_limit_is_respected,
            many_tasks_complete_each_step_once,
            concurrent_submissions_share_commits,
            a_dropped_engine_lets_go_of_its_store,
            an_orchestrator_prunes_tasks_past_their_retention,
            cancel_succeeds_while_workers_are_busy,
            a_busy_queue_does_not_starve_another,
            pausing_a_queue_holds_its_steps_until_resumed,
            tasks_of_one_concurrency_key_never_overlap,
            rate_limited_instances_start_no_faster_than_their_rate,
            a_high_priority_task_submitted_last_starts_first,
        ]);
        $crate::conformance_tests!(@cases $fresh, signal_cases: [
            a_signal_completes_the_step_that_waits_for_it,
            a_signal_delivered_before_the_wait_is_kept_for_it,
            a_wait_times_out_and_an_operator_retry_waits_again,
            waits_that_time_out_together_end_their_task_once,
            a_cancel_or_an_operator_ends_a_wait,
            an_approval_waits_for_its_signal_then_completes,
        ]);
        $crate::conformance_tests!(@cases $fresh, fan_out_cases: [
            a_fan_out_runs_one_instance_per_item,
            an_empty_or_missing_array_or_too_many_items,
            a_failed_instance_fails_its_step_and_a_retry_runs_only_it,
            resolving_a_failed_instance_lets_its_step_complete,
            an_interrupted_fan_out_creates_each_instance_once,
            ten_thousand_items_fan_out_and_in,
            cancelling_a_fan_out_cancels_its_instances,
            instances_retry_and_time_out_on_their_own,
        ]);
        $crate::conformance_tests!(@cases $fresh, schedule_cases: [
            a_schedule_fires_each_tick_once,
            a_schedules_task_begins_a_trace_when_asked,
            a_schedule_refuses_bad_input,
            missed_ticks_follow_the_catch_up_policy,
        ]);
    };
    (@cases $fresh:path, $module:ident: [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $fresh().await else { return };
                $crate::$module::$case(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}
