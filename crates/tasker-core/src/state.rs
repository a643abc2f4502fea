//! The task and step state machines (see `docs/states.md`). Every change of state goes
//! through [`StepState::apply`] or [`TaskState::apply`]; an event that is not allowed in
//! the current state is an [`IllegalTransition`], never silently applied.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An event that was not allowed in the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {entity} transition: `{event}` is not allowed from `{from}`")]
pub struct IllegalTransition {
    pub entity: &'static str,
    pub from: &'static str,
    pub event: &'static str,
}

/// A state name read from storage that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {entity} state `{value}`")]
pub struct UnknownState {
    pub entity: &'static str,
    pub value: String,
}

macro_rules! names {
    ($ty:ident, $entity:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownState { entity: $entity, value: s.to_owned() }),
                }
            }
        }
    };
}

/// The state of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Enqueued,
    InProgress,
    Complete,
    WaitingForRetry,
    Error,
    Cancelled,
    ResolvedManually,
    /// Not run: a decision chose another branch, or every parent was skipped.
    Skipped,
    /// A `wait_for` step reached: it holds no worker and waits for its signal or its
    /// timeout.
    Waiting,
}

names!(StepState, "step", {
    Pending => "pending",
    Enqueued => "enqueued",
    InProgress => "in_progress",
    Complete => "complete",
    WaitingForRetry => "waiting_for_retry",
    Error => "error",
    Cancelled => "cancelled",
    ResolvedManually => "resolved_manually",
    Skipped => "skipped",
    Waiting => "waiting",
});

/// What happens to a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepEvent {
    /// Its parents are done: it goes on its queue.
    Enqueue,
    /// A worker took its message and runs the handler.
    Start,
    /// Its message came back after the visibility timeout: the previous worker was lost.
    Reclaim,
    /// The handler succeeded.
    Succeed,
    /// The handler failed and the step will run again after a delay.
    FailRetryable,
    /// The handler failed for good (permanent error, or attempts exhausted), or a
    /// wait's timeout passed before its signal.
    FailPermanent,
    /// Its retry delay elapsed: back on the queue.
    RetryDue,
    /// Its message was moved to the dead letters (redelivered past its attempts).
    DeadLetter,
    /// Its task was cancelled.
    Cancel,
    /// An operator marked the failed step done with given results.
    Resolve,
    /// An operator asked to run the failed step again.
    Retry,
    /// A decision chose other steps, or every parent was skipped: it will not run.
    Skip,
    /// A `wait_for` step was reached (or retried by an operator) without its signal.
    Wait,
    /// The signal a `wait_for` step waits for was delivered: its payload is the result.
    Signal,
    /// A `for_each` step's instances were created (or, after an operator's retry or
    /// resolution of the failed ones, run on): it is in progress while they run.
    Expand,
}

impl StepEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            StepEvent::Enqueue => "enqueue",
            StepEvent::Start => "start",
            StepEvent::Reclaim => "reclaim",
            StepEvent::Succeed => "succeed",
            StepEvent::FailRetryable => "fail_retryable",
            StepEvent::FailPermanent => "fail_permanent",
            StepEvent::RetryDue => "retry_due",
            StepEvent::DeadLetter => "dead_letter",
            StepEvent::Cancel => "cancel",
            StepEvent::Resolve => "resolve",
            StepEvent::Retry => "retry",
            StepEvent::Skip => "skip",
            StepEvent::Wait => "wait",
            StepEvent::Signal => "signal",
            StepEvent::Expand => "expand",
        }
    }
}

impl StepState {
    /// The state `event` leads to from `self`, or why it may not happen.
    pub fn apply(self, event: StepEvent) -> Result<StepState, IllegalTransition> {
        use StepEvent as E;
        use StepState as S;
        let next = match (self, event) {
            (S::Pending, E::Enqueue) => S::Enqueued,
            (S::Enqueued, E::Start) => S::InProgress,
            (S::InProgress, E::Reclaim) => S::InProgress,
            (S::InProgress, E::Succeed) => S::Complete,
            (S::InProgress, E::FailRetryable) => S::WaitingForRetry,
            // From pending: a `for_each` step whose source is not an array it may take.
            (S::Pending | S::InProgress | S::Waiting, E::FailPermanent) => S::Error,
            (S::WaitingForRetry, E::RetryDue) => S::Enqueued,
            (S::Enqueued | S::InProgress, E::DeadLetter) => S::Error,
            (
                S::Pending | S::Enqueued | S::InProgress | S::WaitingForRetry | S::Waiting,
                E::Cancel,
            ) => S::Cancelled,
            (S::Error | S::Waiting, E::Resolve) => S::ResolvedManually,
            (S::Error, E::Retry) => S::Enqueued,
            (S::Pending, E::Skip) => S::Skipped,
            (S::Pending | S::Error, E::Wait) => S::Waiting,
            // A signal kept from before the wait completes it as it is reached.
            (S::Pending | S::Error | S::Waiting, E::Signal) => S::Complete,
            (S::Pending | S::Error, E::Expand) => S::InProgress,
            _ => {
                return Err(IllegalTransition {
                    entity: "step",
                    from: self.as_str(),
                    event: event.as_str(),
                });
            }
        };
        Ok(next)
    }

    /// Complete, resolved or skipped: finished without failing, so its children no
    /// longer wait on it.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepState::Complete | StepState::ResolvedManually | StepState::Skipped
        )
    }

    /// Complete or resolved: done, with results. A step runs when its parents are all
    /// done and at least one of them is live (or it has none).
    pub fn is_live(self) -> bool {
        matches!(self, StepState::Complete | StepState::ResolvedManually)
    }

    /// On a queue, running, waiting to run again or waiting for a signal: the task is
    /// still moving.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            StepState::Enqueued
                | StepState::InProgress
                | StepState::WaitingForRetry
                | StepState::Waiting
        )
    }
}

/// The state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    InProgress,
    Complete,
    Error,
    Cancelled,
}

names!(TaskState, "task", {
    Pending => "pending",
    InProgress => "in_progress",
    Complete => "complete",
    Error => "error",
    Cancelled => "cancelled",
});

/// What happens to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskEvent {
    /// An orchestrator picked it up and enqueued its first steps.
    Start,
    /// Every step is done.
    Complete,
    /// A step failed for good and nothing else can progress.
    Fail,
    /// Cancelled by a user.
    Cancel,
    /// An operator retried or resolved its failed steps.
    Resume,
}

impl TaskEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEvent::Start => "start",
            TaskEvent::Complete => "complete",
            TaskEvent::Fail => "fail",
            TaskEvent::Cancel => "cancel",
            TaskEvent::Resume => "resume",
        }
    }
}

impl TaskState {
    /// The state `event` leads to from `self`, or why it may not happen.
    pub fn apply(self, event: TaskEvent) -> Result<TaskState, IllegalTransition> {
        use TaskEvent as E;
        use TaskState as S;
        let next = match (self, event) {
            (S::Pending, E::Start) => S::InProgress,
            (S::InProgress, E::Complete) => S::Complete,
            (S::InProgress, E::Fail) => S::Error,
            (S::Pending | S::InProgress | S::Error, E::Cancel) => S::Cancelled,
            (S::Error, E::Resume) => S::InProgress,
            _ => {
                return Err(IllegalTransition {
                    entity: "task",
                    from: self.as_str(),
                    event: event.as_str(),
                });
            }
        };
        Ok(next)
    }

    /// Complete, error or cancelled: nothing runs until an operator acts.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Complete | TaskState::Error | TaskState::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_of_a_step() {
        let s = StepState::Pending
            .apply(StepEvent::Enqueue)
            .and_then(|s| s.apply(StepEvent::Start))
            .and_then(|s| s.apply(StepEvent::Succeed))
            .unwrap();
        assert_eq!(s, StepState::Complete);
    }

    #[test]
    fn retry_path_of_a_step() {
        let s = StepState::InProgress
            .apply(StepEvent::FailRetryable)
            .unwrap();
        assert_eq!(s, StepState::WaitingForRetry);
        assert_eq!(s.apply(StepEvent::RetryDue).unwrap(), StepState::Enqueued);
        assert_eq!(
            StepState::Error.apply(StepEvent::Resolve).unwrap(),
            StepState::ResolvedManually
        );
    }

    #[test]
    fn illegal_step_transitions_are_errors() {
        let e = StepState::Complete.apply(StepEvent::Start).unwrap_err();
        assert_eq!(
            e.to_string(),
            "illegal step transition: `start` is not allowed from `complete`"
        );
        assert!(StepState::Pending.apply(StepEvent::Start).is_err());
        assert!(StepState::Pending.apply(StepEvent::Succeed).is_err());
        assert!(StepState::Enqueued.apply(StepEvent::Succeed).is_err());
        assert!(StepState::Cancelled.apply(StepEvent::Enqueue).is_err());
        assert!(StepState::Complete.apply(StepEvent::Resolve).is_err());
        assert!(
            StepState::Enqueued.apply(StepEvent::Skip).is_err(),
            "only waiting steps"
        );
        assert_eq!(
            StepState::Pending.apply(StepEvent::Skip).unwrap(),
            StepState::Skipped
        );
    }

    #[test]
    fn a_wait_ends_by_its_signal_its_timeout_a_cancel_or_an_operator() {
        let waiting = StepState::Pending.apply(StepEvent::Wait).unwrap();
        assert_eq!(waiting, StepState::Waiting);
        assert!(waiting.is_active(), "a waiting task is still moving");
        assert_eq!(
            waiting.apply(StepEvent::Signal).unwrap(),
            StepState::Complete
        );
        assert_eq!(
            StepState::Pending.apply(StepEvent::Signal).unwrap(),
            StepState::Complete,
            "a signal kept from before the wait"
        );
        let timed_out = waiting.apply(StepEvent::FailPermanent).unwrap();
        assert_eq!(timed_out, StepState::Error);
        assert_eq!(timed_out.apply(StepEvent::Wait).unwrap(), waiting);
        assert_eq!(
            waiting.apply(StepEvent::Cancel).unwrap(),
            StepState::Cancelled
        );
        assert_eq!(
            waiting.apply(StepEvent::Resolve).unwrap(),
            StepState::ResolvedManually
        );
        for e in [StepEvent::Start, StepEvent::Succeed, StepEvent::Enqueue] {
            assert!(waiting.apply(e).is_err(), "a wait accepted {e:?}");
        }
        assert!(StepState::Complete.apply(StepEvent::Signal).is_err());
    }

    #[test]
    fn a_fan_out_runs_while_its_instances_do() {
        let running = StepState::Pending.apply(StepEvent::Expand).unwrap();
        assert_eq!(running, StepState::InProgress);
        assert_eq!(
            running.apply(StepEvent::Succeed).unwrap(),
            StepState::Complete
        );
        let failed = running.apply(StepEvent::FailPermanent).unwrap();
        assert_eq!(failed.apply(StepEvent::Expand).unwrap(), running);
        assert_eq!(
            StepState::Pending.apply(StepEvent::FailPermanent).unwrap(),
            StepState::Error,
            "a source that is not an array"
        );
        assert!(running.apply(StepEvent::Expand).is_err());
    }

    #[test]
    fn every_final_step_state_rejects_work_events() {
        for s in [
            StepState::Complete,
            StepState::Cancelled,
            StepState::ResolvedManually,
            StepState::Skipped,
        ] {
            for e in [
                StepEvent::Enqueue,
                StepEvent::Start,
                StepEvent::Succeed,
                StepEvent::Cancel,
                StepEvent::Skip,
                StepEvent::Wait,
                StepEvent::Signal,
                StepEvent::Expand,
            ] {
                assert!(s.apply(e).is_err(), "{s} accepted {e:?}");
            }
        }
    }

    #[test]
    fn task_machine() {
        assert_eq!(
            TaskState::Pending.apply(TaskEvent::Start).unwrap(),
            TaskState::InProgress
        );
        assert_eq!(
            TaskState::Error.apply(TaskEvent::Resume).unwrap(),
            TaskState::InProgress
        );
        assert!(TaskState::Complete.apply(TaskEvent::Cancel).is_err());
        assert!(TaskState::Pending.apply(TaskEvent::Complete).is_err());
        assert!(TaskState::Cancelled.apply(TaskEvent::Resume).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        assert!("done".parse::<TaskState>().is_err());
    }
}
