//! Commands that act on tasks in either store: submit, wait, history, dead letters,
//! cancel, retry, resolve, and registering templates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tasker_core::duration::{HumanDuration, parse_duration};
use tasker_core::id::{StepId, TaskId};
use tasker_core::schedule::CatchUp;
use tasker_core::state::TaskState;
use tasker_core::store::{Registration, Store, StoreError};
use tasker_core::template::TaskTemplate;
use tasker_engine::{Engine, EngineConfig, EngineError, HandlerRegistry};

use super::ProgressLine;
use crate::report;
use crate::{CliError, Outcome};

/// How often `wait` looks at the task: it runs in another process than the work.
const WAIT_POLL: Duration = Duration::from_millis(200);

fn task_id(id: &str) -> Result<TaskId, CliError> {
    id.parse()
        .map_err(|e| CliError::BadInput(format!("`{id}` is not a task id: {e}")))
}

/// Store errors caused by what the user asked (no such task, a refused transition).
fn store_error(e: StoreError) -> CliError {
    match e {
        StoreError::NotFound(_)
        | StoreError::Conflict(_)
        | StoreError::Invalid(_)
        | StoreError::IllegalTransition(_) => CliError::bad(e),
        other => CliError::failed(other),
    }
}

/// Submits through an engine that runs nothing; `handlers` are what the template is
/// checked against.
pub async fn submit<S: Store>(
    store: S,
    template: &TaskTemplate,
    context: &str,
    idempotency_key: Option<&str>,
    priority: Option<i32>,
    handlers: &HandlerRegistry,
) -> Result<Outcome, CliError> {
    let engine = operator(store, handlers.clone());
    // A key makes a retry safe: when the connection drops around the commit, the
    // next attempt finds the task the first one may have created.
    let generated;
    let key = match idempotency_key {
        Some(k) => k,
        None => {
            generated = format!("submit-{}", TaskId::new());
            &generated
        }
    };
    let created = retry_unavailable(SUBMIT_PAUSES, || {
        engine.submit_with_priority(template, context, Some(key), priority)
    })
    .await
    .map_err(engine_error)?;
    if !created.created && idempotency_key.is_some() {
        eprintln!("the idempotency key names an existing task");
    }
    println!("{}", created.task_id);
    Ok(Outcome::Success)
}

/// The pauses between attempts of a submission the database could not take.
const SUBMIT_PAUSES: &[Duration] = &[
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Runs `attempt` again after each pause while it fails with
/// [`StoreError::Unavailable`]; any other outcome is returned at once.
async fn retry_unavailable<T, F: Future<Output = Result<T, EngineError>>>(
    pauses: &[Duration],
    mut attempt: impl FnMut() -> F,
) -> Result<T, EngineError> {
    let mut pauses = pauses.iter();
    loop {
        match attempt().await {
            Err(EngineError::Store(StoreError::Unavailable(why))) => match pauses.next() {
                Some(pause) => {
                    eprintln!("the database is unavailable ({why}); trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(EngineError::Store(StoreError::Unavailable(why))),
            },
            done => return done,
        }
    }
}

pub async fn wait<S: Store>(
    store: S,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Outcome, CliError> {
    let id = task_id(id)?;
    let engine = operator(store, HandlerRegistry::with_builtins());
    let started = Instant::now();
    let mut progress = ProgressLine::new(true);
    loop {
        let now = engine.progress(id).await.map_err(engine_error)?;
        progress.show(&report::progress(&now));
        if now.state.is_final() {
            progress.finish();
            let detail = engine.task(id).await.map_err(engine_error)?;
            print!("{}", report::table(&detail));
            return Ok(match detail.task.state {
                TaskState::Complete => Outcome::Success,
                _ => Outcome::Unsuccessful,
            });
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            progress.finish();
            eprintln!("timed out: task {id} is still {}", now.state);
            return Ok(Outcome::TimedOut);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// An engine that runs nothing, for one command: a submission or an operator action
/// takes the same path (and publishes the same events) as from the API or Ruby.
pub(super) fn operator<S: Store>(store: S, handlers: HandlerRegistry) -> Engine<S> {
    Engine::new(Arc::new(store), handlers, EngineConfig::client())
}

/// Engine errors caused by what the user asked, as [`store_error`] sorts them.
fn engine_error(e: EngineError) -> CliError {
    match e {
        EngineError::Store(e) => store_error(e),
        other => CliError::bad(other),
    }
}

pub async fn history<S: Store>(store: S, id: &str, json: bool) -> Result<Outcome, CliError> {
    let id = task_id(id)?;
    let engine = operator(store, HandlerRegistry::with_builtins());
    let transitions = engine.history(id).await.map_err(engine_error)?;
    if json {
        let view = tasker_core::views::History::new(id, transitions);
        println!("{}", serde_json::to_string(&view).expect("serializable"));
        return Ok(Outcome::Success);
    }
    let detail = engine.task(id).await.map_err(engine_error)?;
    for t in &transitions {
        let step = t
            .step_id
            .and_then(|s| detail.steps.iter().find(|d| d.id == s))
            .map_or("(task)", |d| d.name.as_str());
        println!(
            "{}  {:<20} {:>11} -> {:<17} {}",
            t.at,
            step,
            t.from_state.as_deref().unwrap_or("-"),
            t.to_state,
            t.reason
        );
    }
    Ok(Outcome::Success)
}

pub async fn dead_letters<S: Store>(
    store: S,
    queue: Option<&str>,
    json: bool,
) -> Result<Outcome, CliError> {
    let letters = operator(store, HandlerRegistry::with_builtins())
        .dead_letters(queue)
        .await
        .map_err(engine_error)?;
    if json {
        let view = tasker_core::views::DeadLetters::new(letters);
        println!("{}", serde_json::to_string(&view).expect("serializable"));
        return Ok(Outcome::Success);
    }
    if letters.is_empty() {
        println!("no dead letters");
    }
    for d in &letters {
        println!(
            "{}  {}#{} (read {} times)  {}",
            d.archived_at, d.queue, d.msg_id, d.read_ct, d.reason
        );
    }
    Ok(Outcome::Success)
}

/// Says what a pause or a resumption left `what` in.
fn say_paused(what: &str, paused: bool, changed: bool) {
    let state = if paused { "paused" } else { "not paused" };
    match changed {
        true => println!("{what} is {state}"),
        false => println!("{what} was already {state}"),
    }
}

/// Pauses (`paused`) or resumes a queue.
pub async fn pause<S: Store>(store: S, queue: &str, paused: bool) -> Result<Outcome, CliError> {
    let changed = operator(store, HandlerRegistry::with_builtins())
        .pause_queue(queue, paused)
        .await
        .map_err(engine_error)?;
    say_paused(&format!("queue {queue}"), paused, changed);
    Ok(Outcome::Success)
}

/// Pauses (`paused`) or resumes the template `namespace/name`.
pub async fn pause_template<S: Store>(
    store: S,
    template: &str,
    paused: bool,
) -> Result<Outcome, CliError> {
    let Some((namespace, name)) = template.split_once('/') else {
        return Err(CliError::BadInput(format!(
            "`{template}` is not a template: write it `namespace/name`"
        )));
    };
    let changed = operator(store, HandlerRegistry::with_builtins())
        .pause_template(namespace, name, paused)
        .await
        .map_err(engine_error)?;
    say_paused(&format!("template {template}"), paused, changed);
    Ok(Outcome::Success)
}

/// What `tasker schedule create` was given.
pub struct ScheduleArgs<'a> {
    pub name: &'a str,
    pub template: &'a TaskTemplate,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub context: &'a str,
    pub catch_up: CatchUp,
}

pub async fn schedule_create<S: Store>(
    store: S,
    a: ScheduleArgs<'_>,
    handlers: &HandlerRegistry,
) -> Result<Outcome, CliError> {
    let created = operator(store, handlers.clone())
        .schedule_create(
            a.name, a.template, a.cron, a.timezone, a.context, a.catch_up,
        )
        .await
        .map_err(engine_error)?;
    let next = created
        .next_fire
        .map_or("never".to_owned(), |t| t.to_string());
    println!("schedule {} created; it fires next at {next}", created.name);
    Ok(Outcome::Success)
}

pub async fn schedules<S: Store>(store: S, json: bool) -> Result<Outcome, CliError> {
    let schedules = operator(store, HandlerRegistry::with_builtins())
        .schedules()
        .await
        .map_err(engine_error)?;
    if json {
        let list = tasker_core::views::ScheduleList::new(&schedules);
        println!("{}", serde_json::to_string(&list).expect("serializable"));
        return Ok(Outcome::Success);
    }
    if schedules.is_empty() {
        println!("no schedules");
    }
    for s in &schedules {
        let when = match (s.paused, s.next_fire) {
            (true, _) => "paused".to_owned(),
            (false, Some(t)) => format!("next {t}"),
            (false, None) => "no more ticks".to_owned(),
        };
        let last = s.last_fire.map_or("never".to_owned(), |t| t.to_string());
        println!(
            "{:<24} {}/{}@{}  `{}` {} (catch-up {})  {when}  last {last}",
            s.name, s.namespace, s.template, s.version, s.cron, s.timezone, s.catch_up
        );
    }
    Ok(Outcome::Success)
}

pub async fn pause_schedule<S: Store>(
    store: S,
    name: &str,
    paused: bool,
) -> Result<Outcome, CliError> {
    let changed = operator(store, HandlerRegistry::with_builtins())
        .pause_schedule(name, paused)
        .await
        .map_err(engine_error)?;
    say_paused(&format!("schedule {name}"), paused, changed);
    Ok(Outcome::Success)
}

pub async fn delete_schedule<S: Store>(store: S, name: &str) -> Result<Outcome, CliError> {
    operator(store, HandlerRegistry::with_builtins())
        .delete_schedule(name)
        .await
        .map_err(engine_error)?;
    println!("schedule {name} deleted");
    Ok(Outcome::Success)
}

pub async fn queues<S: Store>(store: S, json: bool) -> Result<Outcome, CliError> {
    let queues = operator(store, HandlerRegistry::with_builtins())
        .queues()
        .await
        .map_err(engine_error)?;
    if json {
        println!("{}", serde_json::to_string(&queues).expect("serializable"));
        return Ok(Outcome::Success);
    }
    if queues.iter().next().is_none() {
        println!("no queues");
    }
    for (queue, messages, paused) in queues.iter() {
        let paused = if paused { "  paused" } else { "" };
        println!("{queue:<40} {messages:>8} message(s){paused}");
    }
    Ok(Outcome::Success)
}

pub async fn cancel<S: Store>(store: S, id: &str) -> Result<Outcome, CliError> {
    let id = task_id(id)?;
    let state = operator(store, HandlerRegistry::with_builtins())
        .cancel(id, "cancelled from the command line")
        .await
        .map_err(engine_error)?;
    println!("task {id} is {state}");
    Ok(Outcome::Success)
}

pub async fn retry<S: Store>(store: S, id: &str) -> Result<Outcome, CliError> {
    let id = task_id(id)?;
    let enqueued = operator(store, HandlerRegistry::with_builtins())
        .retry(id)
        .await
        .map_err(engine_error)?;
    println!("task {id}: {enqueued} failed step(s) enqueued again");
    Ok(Outcome::Success)
}

pub async fn signal<S: Store>(
    store: S,
    id: &str,
    name: &str,
    payload: &str,
) -> Result<Outcome, CliError> {
    let id = task_id(id)?;
    let signalled = operator(store, HandlerRegistry::with_builtins())
        .signal(id, name, payload)
        .await
        .map_err(engine_error)?;
    match signalled.completed.len() {
        0 => println!("signal `{name}` kept for task {id}: no step waits for it yet"),
        n => println!(
            "signal `{name}` delivered: {n} waiting step(s) completed; task {id} is {}",
            signalled.task_state
        ),
    }
    Ok(Outcome::Success)
}

pub async fn resolve<S: Store>(
    store: S,
    step_id: &str,
    results: &str,
) -> Result<Outcome, CliError> {
    let step: StepId = step_id
        .parse()
        .map_err(|e| CliError::BadInput(format!("`{step_id}` is not a step id: {e}")))?;
    let results: &RawValue = serde_json::from_str(results)
        .map_err(|e| CliError::BadInput(format!("--results is not valid JSON: {e}")))?;
    let resolved = operator(store, HandlerRegistry::with_builtins())
        .resolve(step, results)
        .await
        .map_err(engine_error)?;
    println!("step {step} resolved; its task is {}", resolved.task_state);
    Ok(Outcome::Success)
}

pub async fn prune<S: Store>(
    store: S,
    finished_before: &str,
    batch: u32,
) -> Result<Outcome, CliError> {
    let older_than = parse_duration(finished_before)
        .map_err(|e| CliError::BadInput(format!("--finished-before: {e}")))?;
    let mut progress = ProgressLine::new(true);
    let pruned = tasker_engine::retention::prune(&store, older_than, batch, |so_far| {
        progress.show(&format!("pruned {} tasks so far", so_far.tasks))
    })
    .await
    .map_err(store_error)?;
    progress.finish();
    println!(
        "pruned {} task(s) finished more than {} ago ({} steps)",
        pruned.tasks,
        HumanDuration(older_than),
        pruned.steps
    );
    Ok(Outcome::Success)
}

/// Registers the templates of `paths`, each checked against `handlers` first (a
/// `shell` step must be one this configuration permits).
pub async fn register<S: Store>(
    store: S,
    paths: &[PathBuf],
    handlers: &HandlerRegistry,
) -> Result<Outcome, CliError> {
    let mut templates = Vec::new();
    for path in paths {
        templates.extend(tasker_core::template::load_path(path).map_err(CliError::bad)?);
    }
    // All are checked before any is registered.
    for t in &templates {
        handlers.check_template(t).map_err(CliError::BadInput)?;
    }
    let engine = operator(store, handlers.clone());
    for t in &templates {
        match engine.register(t).await.map_err(engine_error)? {
            Registration::Registered => println!("registered  {}", t.key()),
            Registration::Unchanged => println!("unchanged   {}", t.key()),
        }
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn a_submission_is_retried_only_while_the_database_is_unavailable() {
        let pauses = [Duration::ZERO; 3];
        let calls = Cell::new(0);
        let flaky = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                match n {
                    1 | 2 => Err(EngineError::Store(StoreError::Unavailable("gone".into()))),
                    _ => Ok(n),
                }
            }
        };
        assert_eq!(retry_unavailable(&pauses, flaky).await.unwrap(), 3);

        calls.set(0);
        let down = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(EngineError::Store(StoreError::Unavailable("down".into()))) }
        };
        assert!(retry_unavailable(&pauses, down).await.is_err());
        assert_eq!(calls.get(), 4, "the first attempt and one after each pause");

        calls.set(0);
        let refused = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(EngineError::Store(StoreError::NotFound("x".into()))) }
        };
        assert!(retry_unavailable(&pauses, refused).await.is_err());
        assert_eq!(calls.get(), 1, "other errors are not retried");
    }
}
