//! Group commit of submissions. Tasks submitted while a commit is in flight are created
//! together in the next transaction ([`Store::task_create_batch`]): one durable commit
//! for many concurrent submitters (API requests, clients, a bulk load), and no added
//! wait for a lone one, which is committed at once.
//!
//! A batch is all or nothing. When its transaction fails, each of its submissions is
//! created again alone, so a bad one fails only itself.
//!
//! The loop is started by the first submission, on the runtime that makes it, and ends
//! when the engine is dropped; should that runtime be gone, the next submission starts
//! another. It holds the store weakly: a dropped engine closes its store (and releases
//! an embedded file) at once, not when the runtime next polls the loop.

use std::sync::{Arc, Mutex, Weak};

use serde_json::value::RawValue;
use tasker_core::message::TraceParent;
use tasker_core::store::{Store, StoreError, StoreResult, TaskCreateParams, TaskCreated};
use tasker_core::template::TaskTemplate;
use tokio::sync::{mpsc, oneshot};

/// The most tasks one transaction creates.
const MAX_BATCH: usize = 64;

/// One task to create, owned while it waits for its commit.
pub(crate) struct Request {
    pub template: Arc<TaskTemplate>,
    pub context: Box<RawValue>,
    pub idempotency_key: Option<String>,
    pub priority: Option<i32>,
    pub traceparent: Option<TraceParent>,
}

/// A request and where to answer it.
struct Submission {
    request: Request,
    reply: oneshot::Sender<StoreResult<TaskCreated>>,
}

impl Submission {
    fn params(&self) -> TaskCreateParams<'_> {
        let r = &self.request;
        TaskCreateParams {
            template: &r.template,
            context: &r.context,
            idempotency_key: r.idempotency_key.as_deref(),
            priority: r.priority,
            traceparent: r.traceparent,
        }
    }
}

/// The engine's way to its submission loop.
#[derive(Default)]
pub(crate) struct Submitter {
    loop_: Mutex<Option<mpsc::UnboundedSender<Submission>>>,
}

impl Submitter {
    /// Creates the task, sharing the commit with the submissions around it.
    pub(crate) async fn create<S: Store>(
        &self,
        store: &Arc<S>,
        request: Request,
    ) -> StoreResult<TaskCreated> {
        let (reply, answer) = oneshot::channel();
        let submission = Submission { request, reply };
        self.send(store, submission);
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the submission loop stopped before answering".into(),
            ))
        })
    }

    fn send<S: Store>(&self, store: &Arc<S>, submission: Submission) {
        let mut sender = self.loop_.lock().expect("submitter lock");
        let submission = match sender.as_ref() {
            Some(running) => match running.send(submission) {
                Ok(()) => return,
                // Its runtime is gone: start another.
                Err(returned) => returned.0,
            },
            None => submission,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::downgrade(store), rx));
        tx.send(submission).expect("the loop was just started");
        *sender = Some(tx);
    }
}

/// Creates submissions until every sender is gone.
async fn run<S: Store>(store: Weak<S>, mut submissions: mpsc::UnboundedReceiver<Submission>) {
    let mut batch = Vec::new();
    while submissions.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A submitter waiting for its answer keeps the engine, and so the store, alive.
        let Some(store) = store.upgrade() else { break };
        let created = create(&*store, &batch).await;
        // Let go of the store before answering: the engine may be dropped right after.
        drop(store);
        for (submission, created) in batch.drain(..).zip(created) {
            let _ = submission.reply.send(created);
        }
    }
}

/// Creates the tasks of `batch` in one transaction, or each alone if that fails.
async fn create<S: Store>(store: &S, batch: &[Submission]) -> Vec<StoreResult<TaskCreated>> {
    let params: Vec<TaskCreateParams<'_>> = batch.iter().map(Submission::params).collect();
    match store.task_create_batch(&params).await {
        Ok(created) => created.into_iter().map(Ok).collect(),
        Err(e) if batch.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, submissions = batch.len(), "creating tasks failed; creating each alone");
            let mut created = Vec::with_capacity(params.len());
            for &p in &params {
                created.push(store.task_create(p).await);
            }
            created
        }
    }
}
