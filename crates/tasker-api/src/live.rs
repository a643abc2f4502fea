//! `GET /v1/tasks/{id}/stream`: a task's view as Server-Sent Events, sent again each
//! time it changes, so a page shows states as they change without reloading.
//!
//! The store is read every [`POLL`]: the steps may run in other processes (PostgreSQL),
//! whose events this process never sees, and one read of an open page's task every
//! half second costs the store little. A task that takes long to read (thousands of
//! steps) is read less often, so that an open page keeps the store reading for one
//! part in [`READ_SHARE`] of the time at most ([`pause_after`]). The stream ends when
//! the task is complete or cancelled (nothing changes after), and when the server
//! shuts down ([`Closing`]) so a page left open does not hold a graceful shutdown.
//! A server keeps at most [`MAX_STREAMS`] open, so clients cannot multiply those reads
//! without bound; past it a stream is refused with 503 and the page tries again later.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream;
use tasker_core::TaskState;
use tasker_core::id::TaskId;
use tasker_core::store::Store;
use tasker_core::views::TaskView;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::AppState;
use crate::error::ApiError;
use crate::tasks::task_id;

/// The most streams a server keeps open at once.
pub const MAX_STREAMS: usize = 256;

/// How often an open stream reads its task, at most.
const POLL: Duration = Duration::from_millis(500);

/// The most of its time a stream spends reading its task: 1 in 10.
const READ_SHARE: u32 = 10;

/// How long a stream waits before it reads its task again, after a read that took
/// `read`.
fn pause_after(read: Duration) -> Duration {
    POLL.max(read * (READ_SHARE - 1))
}

/// Ends the live streams when the server shuts down.
#[derive(Clone, Debug)]
pub struct Closing(Arc<watch::Sender<bool>>);

impl Default for Closing {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Closing {
    /// Ends every stream open now or opened later.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// The streams open now, at most [`MAX_STREAMS`]: each holds a permit until it ends.
pub(crate) fn stream_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_STREAMS))
}

/// What a stream knows between two events.
struct Watch<S> {
    state: AppState<S>,
    task_id: TaskId,
    closing: watch::Receiver<bool>,
    /// The last view sent; a read that finds the same sends nothing.
    sent: Option<String>,
    /// How long the last read took.
    read: Duration,
    /// The task can no longer change, or cannot be read: the stream ends.
    over: bool,
    /// Its place among the server's open streams, given back when it ends.
    _open: OwnedSemaphorePermit,
}

/// `GET /v1/tasks/{id}/stream`: `task` events, each the task's view as JSON (as `GET
/// /v1/tasks/{id}` answers); an `error` event with the message when it cannot be read.
pub async fn stream<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let task_id = task_id(&id)?;
    // An unknown task is a 404, as its `GET` is, not a stream that fails at once.
    state.engine.progress(task_id).await?;
    let open = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("this server already keeps {MAX_STREAMS} task streams open; try again when one closes"),
        )
    })?;
    let watch = Watch {
        closing: state.closing.subscribe(),
        state,
        task_id,
        sent: None,
        read: Duration::ZERO,
        over: false,
        _open: open,
    };
    let events = Sse::new(stream::unfold(watch, next)).keep_alive(KeepAlive::default());
    // A proxy in front (nginx) would otherwise hold the events back in its buffer.
    Ok((
        [(HeaderName::from_static("x-accel-buffering"), "no")],
        events,
    ))
}

async fn next<S: Store>(mut w: Watch<S>) -> Option<(Result<Event, Infallible>, Watch<S>)> {
    loop {
        if w.over || *w.closing.borrow() {
            return None;
        }
        if w.sent.is_some() {
            tokio::select! {
                _ = w.closing.wait_for(|closed| *closed) => return None,
                () = tokio::time::sleep(pause_after(w.read)) => {}
            }
        }
        let began = Instant::now();
        let detail = w.state.engine.task(w.task_id).await;
        w.read = began.elapsed();
        let detail = match detail {
            Ok(detail) => detail,
            Err(e) => {
                tracing::warn!(task_id = %w.task_id, error = %e, "a task's stream cannot read it");
                w.over = true;
                return Some((Ok(Event::default().event("error").data(e.to_string())), w));
            }
        };
        let view = TaskView::json(&detail);
        if w.sent.as_deref() == Some(view.as_str()) {
            continue;
        }
        w.over = matches!(
            detail.task.state,
            TaskState::Complete | TaskState::Cancelled
        );
        let event = Event::default().event("task").data(&view);
        w.sent = Some(view);
        return Some((Ok(event), w));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::pause_after;

    #[test]
    fn a_task_slow_to_read_is_read_less_often() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after(ms(0)), ms(500));
        assert_eq!(
            pause_after(ms(20)),
            ms(500),
            "a small task: every half second"
        );
        assert_eq!(pause_after(ms(100)), ms(900), "reading 100 ms in 1,000");
        assert_eq!(pause_after(ms(400)), ms(3600));
    }
}
