//! What travels on the queues. Messages are small — ids, the attempt, the handler key —
//! and a worker loads the rest in one query. Decoding borrows from the row's buffer:
//! ids parse from borrowed text and names stay `Cow::Borrowed`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::id::{StepId, TaskId};

/// The internal queue that carries new tasks to orchestrators. User queues start with
/// a letter, so this name cannot collide with one.
pub const TASK_QUEUE: &str = "_tasks";

/// A step for a worker to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage<'a> {
    pub task_id: TaskId,
    pub step_id: StepId,
    /// The attempt this message starts (1 for the first run).
    pub attempt: u32,
    #[serde(borrow)]
    pub handler: Cow<'a, str>,
}

/// A submitted task for an orchestrator to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_id: TaskId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_message_decodes_borrowed() {
        let m = StepMessage {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            attempt: 2,
            handler: Cow::Borrowed("sum"),
        };
        let text = serde_json::to_string(&m).unwrap();
        let back: StepMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert!(
            matches!(back.handler, Cow::Borrowed(_)),
            "handler borrowed from the buffer"
        );
    }
}
