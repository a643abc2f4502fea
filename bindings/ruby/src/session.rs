//! A started engine whose Ruby handlers run on Ruby threads: an embedded run
//! (`Tasker.run`, SQLite) or a distributed worker (`Tasker::Worker`, PostgreSQL).
//! Ruby threads take steps with `next_job` until the session closes.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby, Value, function, method};
use tasker_core::id::TaskId;
use tasker_core::store::{Store, StoreError};
use tasker_core::template::TaskTemplate;
use tasker_core::views::TaskView;
use tasker_engine::{
    Engine, EngineConfig, EngineError, HandlerRegistry, Queues, Running, WorkerConfig,
};
use tasker_store::postgres::PgStore;
use tasker_store::sqlite::SqliteStore;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::convert;
use crate::errors;
use crate::gvl::without_gvl;
use crate::jobs::{JobQueue, Pop, RbStepContext, RubyHandler};

/// How long a Ruby thread waits for a step with the GVL released before it lets Ruby
/// check for interrupts (ctrl-C, Thread#kill).
const JOB_WAIT: Duration = Duration::from_millis(100);

/// The process's one tokio runtime, shared by every session and client.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tasker")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
}

/// Runs `work` on the runtime with the GVL released; `Err` if the Ruby thread was
/// interrupted first.
pub fn block_on<T>(ruby: &Ruby, work: impl Future<Output = T>) -> Result<T, Error> {
    without_gvl(ruby, || runtime().block_on(work))
}

/// Loads exactly one template from a file.
pub fn load_template(ruby: &Ruby, path: &str) -> Result<TaskTemplate, Error> {
    tasker_core::template::load_one(std::path::Path::new(path))
        .map_err(|e| errors::template(ruby, e))
}

/// Built-in handlers first; every other name goes to a Ruby thread.
fn registry(jobs: &Arc<JobQueue>) -> HandlerRegistry {
    let mut registry = HandlerRegistry::with_builtins();
    registry.fallback(RubyHandler {
        queue: jobs.clone(),
    });
    registry
}

/// Why a session could not start.
enum StartError {
    Store(StoreError),
    Engine(EngineError),
}

impl StartError {
    fn raise(self, ruby: &Ruby) -> Error {
        match self {
            Self::Store(e) => errors::store(ruby, e),
            Self::Engine(e) => errors::engine(ruby, e),
        }
    }
}

/// `Tasker::Native::Session`.
#[magnus::wrap(class = "Tasker::Native::Session", free_immediately, size)]
pub struct Session {
    jobs: Arc<JobQueue>,
    stop: watch::Sender<bool>,
    /// An embedded run's finished task as JSON, or why it could not be followed.
    outcome: Arc<Mutex<Option<Result<String, String>>>>,
}

impl Session {
    /// Stops the engine when asked, lets the steps in flight finish, then closes the
    /// job queue; `follow` is what the session waits for meanwhile.
    fn spawn(
        jobs: Arc<JobQueue>,
        running: Running,
        follow: impl Future<Output = Option<Result<String, String>>> + Send + 'static,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let outcome = Arc::new(Mutex::new(None));
        let (queue, result) = (jobs.clone(), outcome.clone());
        runtime().spawn(async move {
            let followed = tokio::select! {
                r = follow => r,
                _ = stopped.wait_for(|s| *s) => None,
            };
            running.shutdown().await;
            *result.lock().expect("outcome lock") = followed;
            queue.close();
        });
        Self {
            jobs,
            stop,
            outcome,
        }
    }

    fn embedded(
        ruby: &Ruby,
        template: String,
        context: Value,
        db: Option<String>,
        concurrency: usize,
    ) -> Result<Self, Error> {
        let template = load_template(ruby, &template)?;
        let context = convert::to_json(ruby, context, "context")?;
        let db = db.unwrap_or_else(|| ":memory:".to_owned());
        let jobs = Arc::new(JobQueue::default());
        let config = EngineConfig {
            worker: Some(WorkerConfig {
                queues: Queues::All,
                concurrency: concurrency.max(1),
            }),
            ..EngineConfig::embedded()
        };
        let registry = registry(&jobs);
        let (engine, running, task_id) = block_on(ruby, async {
            let store = SqliteStore::open(&db).await.map_err(StartError::Store)?;
            let engine = Engine::new(Arc::new(store), registry, config);
            let running = engine.start();
            match engine.submit(&template, &context, None).await {
                Ok(task) => Ok((engine, running, task.task_id)),
                Err(e) => {
                    running.shutdown().await;
                    Err(StartError::Engine(e))
                }
            }
        })?
        .map_err(|e| e.raise(ruby))?;
        Ok(Self::spawn(jobs, running, follow(engine, task_id)))
    }

    fn worker(
        ruby: &Ruby,
        database_url: String,
        queues: Vec<String>,
        concurrency: usize,
    ) -> Result<Self, Error> {
        for q in &queues {
            tasker_core::names::check_queue_name(q).map_err(|why| {
                Error::new(ruby.exception_arg_error(), format!("queue `{q}` {why}"))
            })?;
        }
        let concurrency = concurrency.max(1);
        let store = connect(ruby, &database_url, concurrency as u32 + 2)?;
        let jobs = Arc::new(JobQueue::default());
        let config = EngineConfig {
            orchestrator: false,
            worker: Some(WorkerConfig {
                queues: if queues.is_empty() {
                    Queues::All
                } else {
                    Queues::Named(queues)
                },
                concurrency,
            }),
            ..EngineConfig::embedded()
        };
        let engine = Engine::new(store, registry(&jobs), config);
        let running = {
            let _in_runtime = runtime().enter();
            engine.start()
        };
        Ok(Self::spawn(jobs, running, std::future::pending()))
    }

    /// The next step for this Ruby thread to run; nil once the session has closed.
    fn next_job(ruby: &Ruby, rb_self: &Self) -> Result<Option<RbStepContext>, Error> {
        loop {
            match without_gvl(ruby, || rb_self.jobs.pop(JOB_WAIT))? {
                Pop::Job(job) => return Ok(Some(job.into())),
                Pop::Closed => return Ok(None),
                Pop::Empty => ruby.thread_check_ints()?,
            }
        }
    }

    /// Stop taking steps; the steps in flight still finish.
    fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// The embedded run's task (`{"task_id", "state", "steps": [...]}`), nil if stopped.
    fn result(ruby: &Ruby, rb_self: &Self) -> Result<Option<Value>, Error> {
        let outcome = rb_self.outcome.lock().expect("outcome lock").clone();
        match outcome {
            None => Ok(None),
            Some(Ok(json)) => convert::to_ruby(ruby, &json).map(Some),
            Some(Err(why)) => Err(errors::general(ruby, why)),
        }
    }
}

/// Waits for the task to end; its report as JSON.
async fn follow<S: Store>(engine: Engine<S>, task_id: TaskId) -> Option<Result<String, String>> {
    Some(
        engine
            .wait(task_id, |_| {})
            .await
            .map(|detail| TaskView::json(&detail))
            .map_err(|e| e.to_string()),
    )
}

/// The process's store for `url` (one pool, one listening connection, shared by every
/// client and worker of the process), with at least `connections`; its schema checked,
/// read-only, to be this build's: only `tasker migrate` changes it, so a worker needs no
/// rights to run DDL.
pub fn connect(ruby: &Ruby, url: &str, connections: u32) -> Result<Arc<PgStore>, Error> {
    block_on(ruby, async {
        let store = PgStore::shared(url, connections).await?;
        store.check_schema().await?;
        Ok(store)
    })?
    .map_err(|e: StoreError| errors::general(ruby, format!("cannot use the database: {e}")))
}

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Session", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("embedded", function!(Session::embedded, 4))?;
    class.define_singleton_method("worker", function!(Session::worker, 3))?;
    class.define_method("next_job", method!(Session::next_job, 0))?;
    class.define_method("stop", method!(Session::stop, 0))?;
    class.define_method("result", method!(Session::result, 0))?;
    Ok(())
}
