//! The shapes in which the edges show a task's history and the dead letters: the API's
//! answers, `tasker … --json` and Ruby's hashes are these, serialized once here.

use serde::Serialize;

use crate::id::{StepId, TaskId};
use crate::store::{DeadLetter, TransitionRecord};

/// A task's transitions, oldest first.
#[derive(Serialize)]
pub struct History {
    task_id: TaskId,
    transitions: Vec<TransitionView>,
}

#[derive(Serialize)]
struct TransitionView {
    /// None for a change of the task itself.
    step_id: Option<StepId>,
    from: Option<String>,
    to: String,
    reason: String,
    at: String,
}

impl History {
    pub fn new(task_id: TaskId, transitions: Vec<TransitionRecord>) -> Self {
        let transitions = transitions
            .into_iter()
            .map(|t| TransitionView {
                step_id: t.step_id,
                from: t.from_state,
                to: t.to_state,
                reason: t.reason,
                at: t.at.to_string(),
            })
            .collect();
        Self {
            task_id,
            transitions,
        }
    }
}

/// Messages moved to the dead letters, each with why.
#[derive(Serialize)]
pub struct DeadLetters {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Serialize)]
struct DeadLetterView {
    queue: String,
    msg_id: i64,
    /// How many times it was read.
    read_ct: i32,
    /// The message's JSON text.
    message: String,
    reason: String,
    archived_at: String,
}

impl DeadLetters {
    pub fn new(letters: Vec<DeadLetter>) -> Self {
        let dead_letters = letters
            .into_iter()
            .map(|d| DeadLetterView {
                queue: d.queue,
                msg_id: d.msg_id,
                read_ct: d.read_ct,
                message: d.body,
                reason: d.reason,
                archived_at: d.archived_at.to_string(),
            })
            .collect();
        Self { dead_letters }
    }
}
