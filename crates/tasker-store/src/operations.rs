//! The state-changing operations of the `Store` trait, written once over
//! [`Primitives`]: each runs inside one transaction that its backend opens and commits.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::duration::HumanDuration;
use tasker_core::fan_out;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{
    ScheduleTick, StepMessage, TASK_QUEUE, TaskStart, TraceParent, by_queue,
};
use tasker_core::readiness::{self, Outcome as Readiness, Progress, Release};
use tasker_core::schedule::{self, Cadence};
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use crate::primitives::{
    EvalStep, InstanceView, KeyGroup, LockedTask, Move, NewTask, Outcome, Primitives, StepRow,
    TaskMove, Transition,
};

pub(crate) async fn template_register<P: Primitives>(
    p: &mut P,
    template: &TaskTemplate,
) -> StoreResult<Registration> {
    let definition = template.canonical_json();
    let key = template.key();
    let existing = match p
        .template_definition_of(key.namespace, key.name, key.version)
        .await?
    {
        None if p.template_insert(template, &definition).await? => {
            ensure_queues(p, template).await?;
            return Ok(Registration::Registered);
        }
        // Registered by someone else since we looked: compare with theirs.
        None => {
            p.template_definition_of(key.namespace, key.name, key.version)
                .await?
        }
        found => found,
    };
    if existing.as_deref() == Some(definition.as_str()) {
        Ok(Registration::Unchanged)
    } else {
        Err(StoreError::Conflict(format!(
            "template {} is already registered with different content; versions are immutable, give the change a new version",
            template.key()
        )))
    }
}

async fn ensure_queues<P: Primitives>(p: &mut P, template: &TaskTemplate) -> StoreResult<()> {
    for (i, step) in template.steps.iter().enumerate() {
        if template.steps[..i].iter().all(|s| s.queue != step.queue) {
            p.queue_ensure(&step.queue).await?;
        }
    }
    Ok(())
}

pub(crate) async fn task_create<P: Primitives>(
    p: &mut P,
    params: TaskCreateParams<'_>,
) -> StoreResult<TaskCreated> {
    if let Some(key) = params.idempotency_key
        && let Some(task_id) = p.task_by_key(key).await?
    {
        return Ok(TaskCreated {
            task_id,
            created: false,
        });
    }
    let concurrency_key = params
        .template
        .concurrency_value(params.context)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let priority = params.priority.unwrap_or(params.template.priority);
    tasker_core::template::check_priority(priority).map_err(StoreError::Invalid)?;
    ensure_queues(p, params.template).await?;
    let task_id = TaskId::new();
    p.task_insert(NewTask {
        id: task_id,
        template: params.template,
        context: params.context,
        idempotency_key: params.idempotency_key,
        concurrency_key: concurrency_key.as_deref(),
        priority,
        traceparent: params.traceparent,
    })
    .await?;
    let created = Transition {
        task_id,
        step_id: None,
        from: None,
        to: TaskState::Pending.as_str(),
        reason: "created",
    };
    p.transition_append(created).await?;
    request_start(p, task_id).await?;
    Ok(TaskCreated {
        task_id,
        created: true,
    })
}

/// Creates each task of `batch` in turn (a repeated idempotency key finds the task its
/// first use created).
pub(crate) async fn task_create_batch<P: Primitives>(
    p: &mut P,
    batch: &[TaskCreateParams<'_>],
) -> StoreResult<Vec<TaskCreated>> {
    let mut created = Vec::with_capacity(batch.len());
    for &params in batch {
        created.push(task_create(p, params).await?);
    }
    Ok(created)
}

/// The task a transaction changes, locked, with its counters: every step move of the
/// transaction shifts them ([`Task::moved`]), and [`settle`] writes them back.
struct Task {
    id: TaskId,
    state: TaskState,
    progress: Progress,
    stored: Progress,
    /// Steps the transaction skipped.
    skipped: usize,
    /// Whether it holds a slot of a concurrency key while in progress.
    keyed: bool,
    /// The priority of its step messages.
    priority: i32,
    /// The trace context of its step messages.
    traceparent: Option<TraceParent>,
}

impl Task {
    /// A task as [`TaskRows::tasks_lock`](crate::primitives::TaskRows::tasks_lock)
    /// returned it.
    fn locked(t: LockedTask) -> Self {
        Task {
            id: t.id,
            state: t.state,
            progress: t.progress,
            stored: t.progress,
            skipped: 0,
            keyed: t.keyed,
            priority: t.priority,
            traceparent: t.traceparent,
        }
    }

    fn moved(&mut self, m: &Move<'_>) {
        self.progress.shift(m.from, m.to);
    }
}

/// Locks the tasks of `ids` (sorted, without repeats) in id order; every one must exist.
async fn lock_tasks<P: Primitives>(p: &mut P, ids: &[TaskId]) -> StoreResult<Vec<Task>> {
    let rows = p.tasks_lock(ids).await?;
    if let Some(missing) = ids.iter().find(|id| !rows.iter().any(|r| r.id == **id)) {
        return Err(StoreError::NotFound(format!("task {missing}")));
    }
    Ok(rows.into_iter().map(Task::locked).collect())
}

async fn lock_task<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<Task> {
    let mut tasks = lock_tasks(p, &[task_id]).await?;
    Ok(tasks.remove(0))
}

fn step_not_found(step_id: StepId) -> StoreError {
    StoreError::NotFound(format!("step {step_id}"))
}

pub(crate) async fn task_start<P: Primitives>(
    p: &mut P,
    params: TaskStartParams,
) -> StoreResult<TaskStarted> {
    let started = start_tasks(p, &[(params.task_id, params.msg_id)]).await?;
    started[0].ok_or_else(|| StoreError::NotFound(format!("task {}", params.task_id)))
}

/// Reads task requests and starts their tasks, locking them in id order (the same
/// order in every batch, so two batches never deadlock).
pub(crate) async fn task_start_batch<P: Primitives>(
    p: &mut P,
    limit: u32,
    visibility: Duration,
    new_trace: Option<NewTrace>,
) -> StoreResult<TasksStarted> {
    let batch = p.queue_read(TASK_QUEUE, visibility, limit).await?;
    let mut out = TasksStarted {
        next_visible: batch.next_visible,
        ..TasksStarted::default()
    };
    let mut requests = Vec::with_capacity(batch.messages.len());
    let mut expiries = Vec::new();
    let mut ticks = Vec::new();
    for m in &batch.messages {
        match serde_json::from_str::<TaskStart>(&m.body) {
            Ok(TaskStart {
                task_id,
                expire_wait: Some(step_id),
            }) => expiries.push((task_id, step_id, m.msg_id)),
            Ok(r) => requests.push((r.task_id, m.msg_id)),
            // Not a task's: a schedule's tick, or nothing that parses.
            Err(e) => match serde_json::from_str::<ScheduleTick>(&m.body) {
                Ok(tick) => ticks.push((tick, m.msg_id)),
                Err(_) => {
                    let reason = format!("unparseable task request: {e}");
                    p.queue_dead_letter(TASK_QUEUE, m.msg_id, &reason).await?;
                    out.invalid += 1;
                }
            },
        }
    }
    requests.sort_unstable();
    if !expiries.is_empty() {
        // Every task of the batch locked at once, in id order: two sets locked one
        // after the other could deadlock with a transaction that locks both.
        let mut ids: Vec<TaskId> = requests.iter().map(|r| r.0).collect();
        ids.extend(expiries.iter().map(|e| e.0));
        ids.sort_unstable();
        ids.dedup();
        p.tasks_lock(&ids).await?;
    }
    let started = start_tasks(p, &requests).await?;
    for (&(task_id, msg_id), started) in requests.iter().zip(started) {
        match started {
            Some(started) => out.tasks.push(StartedTask { task_id, started }),
            None => {
                let reason = format!("task {task_id} does not exist");
                p.queue_dead_letter(TASK_QUEUE, msg_id, &reason).await?;
                out.invalid += 1;
            }
        }
    }
    out.expired = expire_waits(p, &expiries).await?;
    for (tick, msg_id) in &ticks {
        fire(p, tick, *msg_id, new_trace, &mut out).await?;
    }
    Ok(out)
}

/// Fires the ticks of a schedule that have come, if `tick` is the one it waits for (a
/// paused or deleted schedule's, or a stale one, fires nothing), and sends the next.
/// Each tick's task has a key made of the schedule and the tick, so a tick never
/// creates two tasks, whatever reads its message.
async fn fire<P: Primitives>(
    p: &mut P,
    tick: &ScheduleTick,
    msg_id: i64,
    new_trace: Option<NewTrace>,
    out: &mut TasksStarted,
) -> StoreResult<()> {
    let Some(s) = p.schedule_lock(&tick.schedule).await? else {
        return p.queue_delete(TASK_QUEUE, &[msg_id]).await;
    };
    if s.paused || s.next_fire != Some(Timestamp(tick.at)) {
        return p.queue_delete(TASK_QUEUE, &[msg_id]).await;
    }
    // A schedule this process cannot read (its zone gone from the system, its template
    // unreadable) must not stop every other start: its tick goes to the dead letters,
    // saying why, and the schedule waits for an operator.
    let cadence = Cadence::parse(&s.cron, &s.timezone, s.created_at);
    let definition = p
        .template_definition_of(&s.namespace, &s.template, &s.version)
        .await?;
    let template = definition
        .ok_or_else(|| {
            let (ns, name, version) = (&s.namespace, &s.template, &s.version);
            format!("template {ns}/{name}@{version} is not registered")
        })
        .and_then(|d| {
            tasker_core::template::parse_json_template(&d, &s.name).map_err(|e| e.to_string())
        });
    let (cadence, template) = match (cadence, template) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(why), _) | (_, Err(why)) => {
            let reason = format!("schedule `{}` cannot fire: {why}", s.name);
            p.queue_dead_letter(TASK_QUEUE, msg_id, &reason).await?;
            out.invalid += 1;
            return Ok(());
        }
    };
    p.queue_delete(TASK_QUEUE, &[msg_id]).await?;
    let now = Timestamp::now();
    let plan = schedule::plan(&cadence, Timestamp(tick.at), now, s.catch_up);
    for &fire_at in &plan.fire {
        let key = format!("schedule:{}:{}:{}", s.name, s.created_at.0, fire_at.0);
        let params = TaskCreateParams {
            template: &template,
            context: &s.context,
            idempotency_key: Some(&key),
            priority: None,
            traceparent: new_trace.map(|new| new()),
        };
        let created = task_create(p, params).await?;
        p.tick_insert(&s.name, fire_at, created.task_id).await?;
        out.ticks.push(TickFired {
            schedule: s.name.clone(),
            fire_at,
            task_id: created.task_id,
            lag: now.since(fire_at),
        });
    }
    out.ticks_skipped += plan.skipped;
    p.schedule_set(&s.name, false, plan.next).await?;
    if let Some(next) = plan.next {
        send_tick(p, &s.name, next, now).await?;
    }
    Ok(())
}

/// Sends the message of a schedule's tick at `at`, delayed until then.
async fn send_tick<P: Primitives>(
    p: &mut P,
    schedule: &str,
    at: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    let tick = ScheduleTick {
        schedule: schedule.to_owned(),
        at: at.0,
    };
    let delay = Duration::from_micros(at.0.saturating_sub(now.0).max(0) as u64);
    p.queue_send(TASK_QUEUE, &tick, delay).await
}

pub(crate) async fn schedule_create<P: Primitives>(
    p: &mut P,
    params: ScheduleCreate<'_>,
) -> StoreResult<ScheduleRecord> {
    let now = Timestamp::now();
    let cadence = Cadence::parse(params.cron, params.timezone, now).map_err(StoreError::Invalid)?;
    tasker_core::names::check_name(params.name)
        .map_err(|why| StoreError::Invalid(format!("schedule name `{}` {why}", params.name)))?;
    template_register(p, params.template).await?;
    let key = params.template.key();
    let record = ScheduleRecord {
        name: params.name.to_owned(),
        namespace: key.namespace.to_owned(),
        template: key.name.to_owned(),
        version: key.version.to_owned(),
        cron: params.cron.to_owned(),
        timezone: params.timezone.to_owned(),
        context: params.context.to_owned(),
        catch_up: params.catch_up,
        paused: false,
        next_fire: cadence.next_after(now),
        last_fire: None,
        created_at: now,
    };
    if !p.schedule_insert(&record).await? {
        return Err(StoreError::Conflict(format!(
            "schedule `{}` exists; delete it first or choose another name",
            params.name
        )));
    }
    if let Some(next) = record.next_fire {
        send_tick(p, &record.name, next, now).await?;
    }
    Ok(record)
}

pub(crate) async fn schedule_pause<P: Primitives>(
    p: &mut P,
    name: &str,
    paused: bool,
) -> StoreResult<bool> {
    let s = p
        .schedule_lock(name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))?;
    if s.paused == paused {
        return Ok(false);
    }
    if paused {
        p.schedule_set(name, true, s.next_fire).await?;
        return Ok(true);
    }
    // Resumed: from its next tick after now; what fell due while paused is not missed.
    let now = Timestamp::now();
    let cadence = Cadence::parse(&s.cron, &s.timezone, s.created_at)
        .map_err(|e| StoreError::Corrupt(format!("schedule `{name}`: {e}")))?;
    let next = cadence.next_after(now);
    p.schedule_set(name, false, next).await?;
    if let Some(next) = next {
        send_tick(p, name, next, now).await?;
    }
    Ok(true)
}

pub(crate) async fn schedule_delete<P: Primitives>(p: &mut P, name: &str) -> StoreResult<()> {
    if p.schedule_delete(name).await? {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("schedule `{name}`")))
    }
}

/// Fails each step of `expiries` (task, step, the message of its timeout) that still
/// waits, and deletes the messages: a wait that ended otherwise (signalled, resolved,
/// cancelled) leaves its timeout message to be read and dropped here.
async fn expire_waits<P: Primitives>(
    p: &mut P,
    expiries: &[(TaskId, StepId, i64)],
) -> StoreResult<Vec<WaitExpired>> {
    if expiries.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<TaskId> = expiries.iter().map(|e| e.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = p.tasks_lock(&ids).await?;
    let mut tasks: Vec<Task> = rows.into_iter().map(Task::locked).collect();
    let before: Vec<TaskState> = tasks.iter().map(|t| t.state).collect();
    let step_ids: Vec<StepId> = expiries.iter().map(|e| e.1).collect();
    let rows = p.steps_get(&step_ids, true).await?;
    let mut expired: Vec<(StepId, &StepRow, String)> = Vec::new();
    for (step_id, row) in &rows {
        if let (StepState::Waiting, Some(signal)) = (row.state, &row.wait) {
            let reason = format!(
                "no signal `{signal}` arrived within {}",
                HumanDuration(row.timeout)
            );
            expired.push((*step_id, row, reason));
        }
    }
    let mut changes = Vec::with_capacity(expired.len());
    for (step_id, row, reason) in &expired {
        let m = Move {
            task_id: row.task_id,
            step_id: *step_id,
            from: row.state,
            to: row.state.apply(StepEvent::FailPermanent)?,
            reason,
        };
        let outcome = Outcome {
            results: None,
            error: Some(reason),
        };
        changes.push((m, outcome));
    }
    if p.steps_set_outcome(&changes).await? != changes.len() as u64 {
        return Err(StoreError::Conflict(
            "a waiting step changed while its timeout was recorded".into(),
        ));
    }
    for (m, _) in &changes {
        task_of(&mut tasks, m.task_id).moved(m);
    }
    let messages: Vec<i64> = expiries.iter().map(|e| e.2).collect();
    p.queue_delete(TASK_QUEUE, &messages).await?;
    settle_all(p, &mut tasks, Vec::new()).await?;
    // As a finish batch reports: a task's state after the batch goes with its last
    // expiry alone, so a task two waits end together is settled once.
    Ok(changes
        .iter()
        .enumerate()
        .map(|(k, (m, _))| {
            let t = tasks
                .iter()
                .position(|t| t.id == m.task_id)
                .expect("locked");
            let last = changes[k + 1..].iter().all(|(n, _)| n.task_id != m.task_id);
            WaitExpired {
                task_id: m.task_id,
                step_id: m.step_id,
                task_state: if last { tasks[t].state } else { before[t] },
            }
        })
        .collect())
}

/// Starts the tasks of `requests` (task, message), sorted by task, one statement per
/// kind of change for them all: the pending ones move to in progress with their roots
/// enqueued, and the messages of every task that exists are deleted. What each request
/// did, in order; `None` for a task that does not exist (its message is left alone). A
/// task named twice is started by its first request.
async fn start_tasks<P: Primitives>(
    p: &mut P,
    requests: &[(TaskId, i64)],
) -> StoreResult<Vec<Option<TaskStarted>>> {
    let mut ids: Vec<TaskId> = requests.iter().map(|r| r.0).collect();
    ids.dedup();
    let locked = p.tasks_lock(&ids).await?;
    let mut tasks: Vec<Task> = locked
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .map(|&row| Task::locked(row))
        .collect();
    if !tasks.is_empty() {
        hold(p, &mut tasks).await?;
    }
    let starts: Vec<(usize, TaskEvent, &str)> = (0..tasks.len())
        .map(|i| (i, TaskEvent::Start, "started"))
        .collect();
    move_tasks(p, &mut tasks, &starts).await?;
    let enqueued = if tasks.is_empty() {
        Vec::new()
    } else {
        let started: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
        let roots = p.steps_unblocked(&started).await?;
        settle_all(p, &mut tasks, roots).await?
    };
    let exists = |id: TaskId| locked.iter().find(|r| r.id == id);
    let done: Vec<i64> = requests
        .iter()
        .filter(|r| exists(r.0).is_some())
        .map(|r| r.1)
        .collect();
    if !done.is_empty() {
        p.queue_delete(TASK_QUEUE, &done).await?;
    }
    Ok(requests
        .iter()
        .enumerate()
        .map(|(i, &(id, _))| {
            let row = exists(id)?;
            let first = requests[..i].iter().all(|r| r.0 != id);
            Some(match tasks.iter().position(|t| t.id == id) {
                Some(k) => TaskStarted {
                    started: first,
                    enqueued: if first { enqueued[k] } else { 0 },
                    state: tasks[k].state,
                },
                None => TaskStarted {
                    started: false,
                    enqueued: 0,
                    state: row.state,
                },
            })
        })
        .collect())
}

/// Leaves pending, out of `tasks` (pending, about to start), those that must wait: a
/// paused template's (its resumption requests their starts again) and those whose
/// concurrency key has no free slot (a slot's release requests the start of the
/// oldest). Under the lock of their key groups, only the oldest pending tasks of a
/// group, one per free slot, start; each of those whose request is not in this batch
/// (it was held before) is asked to start.
async fn hold<P: Primitives>(p: &mut P, tasks: &mut Vec<Task>) -> StoreResult<()> {
    let pending: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    let holds = p.tasks_held(&pending).await?;
    if holds.is_empty() {
        return Ok(());
    }
    tasks.retain(|t| !holds.iter().any(|h| h.task_id == t.id && h.paused));
    let keyed: Vec<&crate::primitives::Hold> = holds
        .iter()
        .filter(|h| !h.paused && h.group.is_some())
        .collect();
    let mut groups: Vec<KeyGroup> = keyed.iter().filter_map(|h| h.group.clone()).collect();
    if groups.is_empty() {
        return Ok(());
    }
    groups.sort_unstable();
    groups.dedup();
    p.groups_lock(&groups).await?;
    let mut in_line = Vec::new();
    for group in &groups {
        in_line.extend(p.tasks_in_line(group).await?);
    }
    tasks.retain(|t| in_line.contains(&t.id) || !keyed.iter().any(|h| h.task_id == t.id));
    for &task_id in in_line.iter().filter(|id| !pending.contains(id)) {
        request_start(p, task_id).await?;
    }
    Ok(())
}

/// Asks the orchestrators to start a pending task; a request for a task that has
/// started meanwhile is read and dropped.
async fn request_start<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<()> {
    let start = TaskStart {
        task_id,
        expire_wait: None,
    };
    p.queue_send(TASK_QUEUE, &start, Duration::ZERO).await?;
    Ok(())
}

/// Requests the start of the tasks next in line for the slots that the ending of
/// `ended` (tasks with a concurrency key, no longer in progress) frees. Under the
/// groups' locks, as a start batch decides: a batch that counted the ended task as
/// running has committed, so the line read here holds what it left pending.
async fn release_slots<P: Primitives>(p: &mut P, ended: &[TaskId]) -> StoreResult<()> {
    let mut groups = p.tasks_groups(ended).await?;
    groups.sort_unstable();
    p.groups_lock(&groups).await?;
    for group in &groups {
        for task_id in p.tasks_in_line(group).await? {
            request_start(p, task_id).await?;
        }
    }
    Ok(())
}

pub(crate) async fn template_pause<P: Primitives>(
    p: &mut P,
    namespace: &str,
    name: &str,
    paused: bool,
) -> StoreResult<bool> {
    let changed = p.template_set_paused(namespace, name, paused).await?;
    if changed && !paused {
        for task_id in p.tasks_pending_of(namespace, name).await? {
            request_start(p, task_id).await?;
        }
    }
    Ok(changed)
}

pub(crate) async fn task_cancel<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    reason: &str,
) -> StoreResult<TaskState> {
    let mut task = lock_task(p, task_id).await?;
    task.state.apply(TaskEvent::Cancel)?;
    for step in p.steps_of_task(task_id).await? {
        if let Ok(to) = step.state.apply(StepEvent::Cancel) {
            let m = Move {
                task_id,
                step_id: step.id,
                from: step.state,
                to,
                reason,
            };
            check_moved(p.step_move(m).await?, &m)?;
            task.moved(&m);
        }
    }
    move_task(p, &mut task, TaskEvent::Cancel, reason).await?;
    settle(p, &mut task, Vec::new()).await?;
    Ok(task.state)
}

pub(crate) async fn task_retry<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<usize> {
    let mut task = lock_task(p, task_id).await?;
    if task.state != TaskState::Error {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is {}: only a task in error can be retried",
            task.state
        )));
    }
    move_task(p, &mut task, TaskEvent::Resume, "operator retry").await?;
    let mut enqueued = 0;
    let (mut waits, mut fans) = (Vec::new(), Vec::new());
    for step in p.steps_of_task(task_id).await? {
        if step.state != StepState::Error {
            continue;
        }
        if step.wait.is_some() {
            waits.push(step);
        } else if step.for_each.is_some() {
            if step_get(p, step.id, false).await?.expanded {
                // Its failed instances are retried with the other failed steps.
                let reason = "operator retry: its failed instances run again";
                reset_failed(p, &mut task, &step, StepEvent::Expand, reason).await?;
            } else {
                fans.push(step);
            }
        } else {
            reset_failed(p, &mut task, &step, StepEvent::Retry, "operator retry").await?;
            let message = StepMessage {
                task_id,
                step_id: step.id,
                priority: task.priority,
                traceparent: task.traceparent,
            };
            p.queue_send(&step.queue, &message, Duration::ZERO).await?;
            enqueued += 1;
        }
    }
    enqueued += waits.len();
    let tasks = std::slice::from_mut(&mut task);
    let mut done = begin_waits(p, tasks, &waits).await?;
    let mut created = [0];
    done.extend(expand(p, tasks, &fans, &mut created).await?);
    let ready = release(p, tasks, done, &[]).await?;
    enqueued += created[0] + settle(p, &mut task, ready).await?;
    Ok(enqueued)
}

/// A failed step an operator retries: it moves by `event`, its attempts, results,
/// error and times cleared.
async fn reset_failed<P: Primitives>(
    p: &mut P,
    task: &mut Task,
    step: &EvalStep,
    event: StepEvent,
    reason: &str,
) -> StoreResult<()> {
    let m = Move {
        task_id: task.id,
        step_id: step.id,
        from: step.state,
        to: step.state.apply(event)?,
        reason,
    };
    check_moved(p.step_reset(m).await?, &m)?;
    task.moved(&m);
    Ok(())
}

pub(crate) async fn step_start<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
) -> StoreResult<StepStart> {
    let message = [(params.msg_id, params.step_id)];
    let mut starts = claim_steps(p, params.queue, params.grace, &message).await?;
    Ok(starts.remove(0))
}

/// Reads messages of `queue` and claims their steps; a message that does not parse or
/// names no step goes to the dead letters.
pub(crate) async fn step_claim<P: Primitives>(
    p: &mut P,
    params: ClaimParams<'_>,
) -> StoreResult<Claimed> {
    let queue = params.queue;
    let batch = p.queue_read(queue, params.visibility, params.limit).await?;
    let mut starts: Vec<Option<StepStart>> = batch.messages.iter().map(|_| None).collect();
    let mut parsed = Vec::with_capacity(batch.messages.len());
    for (i, m) in batch.messages.iter().enumerate() {
        match serde_json::from_str::<StepMessage>(&m.body) {
            Ok(message) => parsed.push((i, message.traceparent, (m.msg_id, message.step_id))),
            Err(e) => {
                let reason = format!("unparseable step message: {e}");
                starts[i] = Some(invalid(p, queue, m.msg_id, reason).await?);
            }
        }
    }
    let messages: Vec<(i64, StepId)> = parsed.iter().map(|&(_, _, m)| m).collect();
    let claimed = claim_steps(p, queue, params.grace, &messages).await?;
    for ((i, traceparent, _), mut start) in parsed.into_iter().zip(claimed) {
        if let StepStart::Run(exec) = &mut start {
            exec.traceparent = traceparent;
        }
        starts[i] = Some(start);
    }
    let claims = batch
        .messages
        .iter()
        .zip(starts)
        .map(|(m, start)| Claim {
            msg_id: m.msg_id,
            enqueued_at: m.enqueued_at,
            start: start.expect("every message has its start"),
        })
        .collect();
    Ok(Claimed {
        claims,
        next_visible: batch.next_visible,
    })
}

/// Claims the step of each message (message id, step id) read from `queue`, one
/// statement per kind of change for them all (no task lock: starting a step changes
/// none of the task's counters). Returns what each claim did, in the order of
/// `messages`; the message of a missing step goes to the dead letters, and a second
/// message of a step in the same batch is deleted.
async fn claim_steps<P: Primitives>(
    p: &mut P,
    queue: &str,
    grace: Duration,
    messages: &[(i64, StepId)],
) -> StoreResult<Vec<StepStart>> {
    let ids: Vec<StepId> = messages.iter().map(|m| m.1).collect();
    let rows = p.steps_get(&ids, false).await?;
    let mut starts: Vec<Option<StepStart>> = messages.iter().map(|_| None).collect();
    // (index into `messages`, its step row, the state the attempt starts from)
    let mut begin: Vec<(usize, &StepRow, StepState)> = Vec::with_capacity(messages.len());
    let mut gone = Vec::new();
    // Steps are changed in step id order: the order in which every transaction that
    // locks several steps takes them, so a claim and an operator's action never
    // deadlock.
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by_key(|&i| messages[i].1);
    for i in order {
        let (msg_id, step_id) = messages[i];
        let Some((_, step)) = rows.iter().find(|(id, _)| *id == step_id) else {
            let reason = format!("step {step_id} of this message does not exist");
            starts[i] = Some(invalid(p, queue, msg_id, reason).await?);
            continue;
        };
        let repeated = messages[..i].iter().any(|m| m.1 == step_id);
        let from = match step.state {
            _ if repeated => None,
            StepState::InProgress if step.attempts >= step.max_attempts => {
                starts[i] = Some(dead_letter(p, queue, msg_id, step_id, step.task_id).await?);
                continue;
            }
            StepState::WaitingForRetry => {
                let m = Move {
                    task_id: step.task_id,
                    step_id,
                    from: step.state,
                    to: step.state.apply(StepEvent::RetryDue)?,
                    reason: "retry delay elapsed",
                };
                check_moved(p.step_move(m).await?, &m)?;
                Some(m.to)
            }
            StepState::Enqueued | StepState::InProgress => Some(step.state),
            _ => None,
        };
        match from {
            Some(from) => begin.push((i, step, from)),
            None => {
                gone.push(msg_id);
                starts[i] = Some(StepStart::Skipped { state: step.state });
            }
        }
    }
    if !gone.is_empty() {
        p.queue_delete(queue, &gone).await?;
    }
    limit_rates(p, queue, messages, &mut begin, &mut starts).await?;
    if !begin.is_empty() {
        let reasons: Vec<String> = begin
            .iter()
            .map(|&(_, step, from)| match from {
                StepState::InProgress => format!(
                    "attempt {}: worker lost during attempt {} (visibility timeout expired)",
                    step.attempts + 1,
                    step.attempts
                ),
                _ => format!("attempt {}", step.attempts + 1),
            })
            .collect();
        let mut attempts = Vec::with_capacity(begin.len());
        for (&(i, step, from), reason) in begin.iter().zip(&reasons) {
            let event = if from == StepState::InProgress {
                StepEvent::Reclaim
            } else {
                StepEvent::Start
            };
            let m = Move {
                task_id: step.task_id,
                step_id: messages[i].1,
                from,
                to: from.apply(event)?,
                reason,
            };
            attempts.push((m, step.attempts));
        }
        // The compare-and-set on the state and attempt count settles a race with another
        // reader or an operator (a step cancelled meanwhile): a step it did not start
        // is left alone, its message to show again after the read's visibility.
        let started = p.steps_begin_attempt(&attempts).await?;
        begin.retain(|&(i, step, _)| {
            let won = started.contains(&messages[i].1);
            if !won {
                starts[i] = Some(StepStart::Skipped { state: step.state });
            }
            won
        });
        let hidden: Vec<(i64, Duration)> = begin
            .iter()
            .map(|&(i, step, _)| (messages[i].0, step.timeout + grace))
            .collect();
        p.queue_set_vt(queue, &hidden).await?;
        for exec in p.steps_execution(&started).await? {
            if let Some(&(i, ..)) = begin.iter().find(|&&(i, ..)| messages[i].1 == exec.step_id) {
                starts[i] = Some(StepStart::Run(Box::new(exec)));
            }
        }
    }
    starts
        .into_iter()
        .zip(messages)
        .map(|(start, &(_, step_id))| start.ok_or_else(|| step_not_found(step_id)))
        .collect()
}

/// Holds back the claims of `begin` (index into `messages`, step row, state) whose rate
/// limit has no token now. Such a step books the next token of its key and stays as it
/// is, taking no attempt; its message is hidden until that token's time — a timed
/// wake-up for the readers, not a poll — and then it starts on its booking. Buckets
/// are locked in key order, the same in every claim.
async fn limit_rates<P: Primitives>(
    p: &mut P,
    queue: &str,
    messages: &[(i64, StepId)],
    begin: &mut Vec<(usize, &StepRow, StepState)>,
    starts: &mut [Option<StepStart>],
) -> StoreResult<()> {
    if begin.iter().all(|(_, row, _)| row.rate_limit.is_none()) {
        return Ok(());
    }
    let now = Timestamp::now();
    let mut held = Vec::new();
    let mut hidden = Vec::new();
    let mut bookings = Vec::new();
    let mut hold = |b: usize, i: usize, key: &str, until: Timestamp| {
        let wait = Duration::from_micros(until.0.saturating_sub(now.0).max(0) as u64);
        hidden.push((messages[i].0, wait));
        starts[i] = Some(StepStart::RateLimited {
            key: key.to_owned(),
            until,
        });
        held.push(b);
    };
    // (key, index into `begin`) of the steps that take a token now.
    let mut taking: Vec<(&str, usize)> = Vec::new();
    for (b, &(i, row, _)) in begin.iter().enumerate() {
        let Some(limit) = row.rate_limit.as_deref() else {
            continue;
        };
        // A booking read long after its time (a paused queue, a backlog) is given up:
        // starting on it with the tokens that came meanwhile could exceed the rate.
        let late = |at: Timestamp| now.0 - at.0 > (1e6 / limit.per_second) as i64;
        match row.rate_booked {
            Some(at) if at.0 <= now.0 && !late(at) => bookings.push((messages[i].1, None)),
            Some(at) if at.0 > now.0 => hold(b, i, &limit.key, at),
            _ => taking.push((&limit.key, b)),
        }
    }
    taking.sort_unstable();
    for group in taking.chunk_by(|x, y| x.0 == y.0) {
        let key = group[0].0;
        let limit = begin[group[0].1].1.rate_limit.as_deref().expect("limited");
        let bucket = p.bucket_lock(key).await?;
        let taken = limit.take(Some(bucket), now, group.len());
        p.bucket_set(key, taken.bucket).await?;
        for (&(_, b), &until) in group[taken.granted..].iter().zip(&taken.booked) {
            let i = begin[b].0;
            bookings.push((messages[i].1, Some(until)));
            hold(b, i, key, until);
        }
    }
    if !bookings.is_empty() {
        p.steps_book(&bookings).await?;
    }
    if !hidden.is_empty() {
        p.queue_set_vt(queue, &hidden).await?;
    }
    let mut b = 0;
    begin.retain(|_| {
        b += 1;
        !held.contains(&(b - 1))
    });
    Ok(())
}

async fn invalid<P: Primitives>(
    p: &mut P,
    queue: &str,
    msg_id: i64,
    reason: String,
) -> StoreResult<StepStart> {
    p.queue_dead_letter(queue, msg_id, &reason).await?;
    Ok(StepStart::Invalid { reason })
}

/// The step row, locked if `lock`.
async fn step_get<P: Primitives>(p: &mut P, step_id: StepId, lock: bool) -> StoreResult<StepRow> {
    p.steps_get(&[step_id], lock)
        .await?
        .pop()
        .map(|(_, row)| row)
        .ok_or_else(|| step_not_found(step_id))
}

/// The message of a step whose every attempt lost its worker: to the dead letters,
/// the step to error, and the task settled — with the task locked first.
async fn dead_letter<P: Primitives>(
    p: &mut P,
    queue: &str,
    msg_id: i64,
    step_id: StepId,
    task_id: TaskId,
) -> StoreResult<StepStart> {
    let mut task = lock_task(p, task_id).await?;
    let step = step_get(p, step_id, true).await?;
    if step.state != StepState::InProgress {
        return Ok(StepStart::Skipped { state: step.state });
    }
    let reason = format!(
        "worker lost during attempt {} of {} (visibility timeout expired); message moved to dead letters",
        step.attempts, step.max_attempts
    );
    p.queue_dead_letter(queue, msg_id, &reason).await?;
    let m = Move {
        task_id,
        step_id,
        from: step.state,
        to: step.state.apply(StepEvent::DeadLetter)?,
        reason: &reason,
    };
    let outcome = Outcome {
        results: None,
        error: Some(&reason),
    };
    check_moved(p.steps_set_outcome(&[(m, outcome)]).await?, &m)?;
    task.moved(&m);
    let instance: Vec<InstanceMove<'_>> = instance_move(m, &step).into_iter().collect();
    let tasks = std::slice::from_mut(&mut task);
    let ready = release_moved(p, tasks, &[], &instance, &[]).await?;
    settle(p, &mut task, ready).await?;
    Ok(StepStart::DeadLettered {
        task_id,
        step_id,
        attempts: step.attempts,
        task_state: task.state,
    })
}

/// Finishes each of `batch`, then claims each of `claims`, in one transaction.
pub(crate) async fn step_finish_batch<P: Primitives>(
    p: &mut P,
    batch: &[StepFinishParams<'_>],
    claims: &[ClaimParams<'_>],
) -> StoreResult<FinishedBatch> {
    let finished = finish(p, batch).await?;
    let mut claimed = Vec::with_capacity(claims.len());
    for &c in claims {
        claimed.push(step_claim(p, c).await?);
    }
    Ok(FinishedBatch { finished, claimed })
}

/// Finishes each of `batch`: its tasks locked in id order (the same order in every
/// batch, so two batches never deadlock), then one statement per kind of change for the
/// whole batch. Results are in the order of `batch`; each task's last outcome in the
/// batch carries the task's new state and the steps it enqueued.
async fn finish<P: Primitives>(
    p: &mut P,
    batch: &[StepFinishParams<'_>],
) -> StoreResult<Vec<StepFinished>> {
    let mut task_ids: Vec<TaskId> = batch.iter().map(|b| b.task_id).collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    let mut tasks = lock_tasks(p, &task_ids).await?;
    let before: Vec<TaskState> = tasks.iter().map(|t| t.state).collect();
    let step_ids: Vec<StepId> = batch.iter().map(|b| b.step_id).collect();
    let rows = p.steps_get(&step_ids, true).await?;
    let row_of = |id: StepId| rows.iter().find(|(s, _)| *s == id).map(|(_, r)| r);

    // Which outcomes apply: the step still runs the attempt that ended.
    let mut out = vec![
        StepFinished::Stale {
            state: StepState::Pending
        };
        batch.len()
    ];
    let mut live = Vec::with_capacity(batch.len());
    let mut reasons = Vec::with_capacity(batch.len());
    for (i, params) in batch.iter().enumerate() {
        let step = row_of(params.step_id).ok_or_else(|| step_not_found(params.step_id))?;
        if step.task_id != params.task_id {
            return Err(StoreError::Conflict(format!(
                "step {} is not a step of task {}",
                params.step_id, params.task_id
            )));
        }
        if step.state != StepState::InProgress || step.attempts != params.attempt {
            out[i] = StepFinished::Stale { state: step.state };
            continue;
        }
        live.push((i, step));
        reasons.push(reason_of(params.outcome));
    }
    let mut changes = Vec::with_capacity(live.len());
    for (&(i, step), reason) in live.iter().zip(&reasons) {
        let (event, outcome) = event_of(batch[i].outcome);
        let m = Move {
            task_id: step.task_id,
            step_id: batch[i].step_id,
            from: step.state,
            to: step.state.apply(event)?,
            reason,
        };
        changes.push((m, outcome));
    }
    for (queue, ids) in by_queue(live.iter().map(|&(i, _)| (batch[i].queue, batch[i].msg_id))) {
        p.queue_delete(queue, &ids).await?;
    }
    if p.steps_set_outcome(&changes).await? != changes.len() as u64 {
        return Err(StoreError::Conflict(
            "a step of the batch changed while it was recorded".into(),
        ));
    }
    for (m, _) in &changes {
        task_of(&mut tasks, m.task_id).moved(m);
    }
    for &(i, step) in &live {
        if let StepOutcome::Retry { delay, .. } = batch[i].outcome {
            let task = task_of(&mut tasks, step.task_id);
            let message = StepMessage {
                task_id: step.task_id,
                step_id: batch[i].step_id,
                priority: task.priority,
                traceparent: task.traceparent,
            };
            p.queue_send(&step.queue, &message, delay).await?;
        }
    }
    let moved: Vec<(Move<'_>, u32)> = changes
        .iter()
        .zip(&live)
        .map(|((m, _), (_, step))| (*m, step.position))
        .collect();
    let rows: Vec<&StepRow> = live.iter().map(|(_, step)| *step).collect();
    let away = decided_away(&changes, &rows)?;
    let instances: Vec<InstanceMove<'_>> = changes
        .iter()
        .zip(&rows)
        .filter_map(|((m, _), row)| instance_move(*m, row))
        .collect();
    let ready = release_moved(p, &mut tasks, &moved, &instances, &away).await?;
    let enqueued = settle_all(p, &mut tasks, ready).await?;
    for (k, &(i, step)) in live.iter().enumerate() {
        let t = tasks
            .iter()
            .position(|t| t.id == step.task_id)
            .expect("locked");
        let last = live[k + 1..].iter().all(|(_, s)| s.task_id != step.task_id);
        out[i] = StepFinished::Applied {
            step_state: changes[k].0.to,
            enqueued: if last { enqueued[t] } else { 0 },
            skipped: if last { tasks[t].skipped } else { 0 },
            task_state: if last { tasks[t].state } else { before[t] },
        };
    }
    Ok(out)
}

pub(crate) async fn step_finish<P: Primitives>(
    p: &mut P,
    params: StepFinishParams<'_>,
) -> StoreResult<StepFinished> {
    Ok(finish(p, &[params]).await?[0])
}

/// Why an attempt ended, for its transition.
fn reason_of(outcome: StepOutcome<'_>) -> String {
    match outcome {
        StepOutcome::Succeeded { .. } => "succeeded".to_owned(),
        StepOutcome::Retry { error, delay } => {
            format!("retry in {}: {error}", HumanDuration(delay))
        }
        StepOutcome::Failed { error } => error.to_owned(),
    }
}

/// The step event of an attempt's end, and the columns it writes.
fn event_of(outcome: StepOutcome<'_>) -> (StepEvent, Outcome<'_>) {
    match outcome {
        StepOutcome::Succeeded { results } => (
            StepEvent::Succeed,
            Outcome {
                results: Some(results),
                error: None,
            },
        ),
        StepOutcome::Retry { error, .. } => (
            StepEvent::FailRetryable,
            Outcome {
                results: None,
                error: Some(error),
            },
        ),
        StepOutcome::Failed { error } => (
            StepEvent::FailPermanent,
            Outcome {
                results: None,
                error: Some(error),
            },
        ),
    }
}

fn task_of(tasks: &mut [Task], id: TaskId) -> &mut Task {
    tasks
        .iter_mut()
        .find(|t| t.id == id)
        .expect("the task is locked")
}

pub(crate) async fn step_resolve<P: Primitives>(
    p: &mut P,
    step_id: StepId,
    results: &RawValue,
) -> StoreResult<StepResolved> {
    let task_id = step_get(p, step_id, false).await?.task_id;
    let mut task = lock_task(p, task_id).await?;
    let step = step_get(p, step_id, true).await?;
    if step.expanded {
        return Err(StoreError::Conflict(format!(
            "step `{}` ran instances: resolve its failed instances (`{}[…]`) instead, or retry the task",
            step.name, step.name
        )));
    }
    let m = Move {
        task_id,
        step_id,
        from: step.state,
        to: step.state.apply(StepEvent::Resolve)?,
        reason: "resolved by an operator",
    };
    let outcome = Outcome {
        results: Some(results),
        error: None,
    };
    let changes = [(m, outcome)];
    // A deciding step's resolution decides too: results that do not choose are refused.
    let away = decided_away(&changes, &[&step])?;
    check_moved(p.steps_set_outcome(&changes).await?, &m)?;
    task.moved(&m);
    let resumed = task.state == TaskState::Error;
    if resumed {
        let reason = format!("step `{}` resolved by an operator", step.name);
        move_task(p, &mut task, TaskEvent::Resume, &reason).await?;
    }
    let tasks = std::slice::from_mut(&mut task);
    let instance: Vec<InstanceMove<'_>> = instance_move(m, &step).into_iter().collect();
    let ready = release_moved(p, tasks, &[(m, step.position)], &instance, &away).await?;
    settle(p, &mut task, ready).await?;
    Ok(StepResolved {
        task_id,
        task_state: task.state,
        resumed,
        skipped: task.skipped,
    })
}

/// Releases the children of the steps `moved` made done, and of the `for_each` steps
/// that the moves of their instances (`instances`) completed, after skipping `away`.
async fn release_moved<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    moved: &[(Move<'_>, u32)],
    instances: &[InstanceMove<'_>],
    away: &[(TaskId, u32)],
) -> StoreResult<Vec<EvalStep>> {
    let mut done = became_done(moved);
    done.extend(instances_settled(p, tasks, instances).await?);
    release(p, tasks, done, away).await
}

/// The steps of `moved` that became done, as (task, position, live) for [`release`].
fn became_done(moved: &[(Move<'_>, u32)]) -> Vec<(TaskId, u32, bool)> {
    moved
        .iter()
        .filter(|(m, _)| !m.from.is_done() && m.to.is_done())
        .map(|(m, position)| (m.task_id, *position, m.to.is_live()))
        .collect()
}

/// Releases the children of the steps of `done` (task, position, live), after skipping
/// `away` (the pending children that decisions among them did not choose): each child
/// waits on one parent less, with one live parent more if that parent has results. A
/// pending child with no parent left to finish runs if a parent is live and is skipped
/// if none is, which releases its own children in turn. Returns the steps to run, by
/// task and position; the skips are applied, and shift `tasks`' counters. Costs the
/// edges of the steps that became done.
async fn release<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    mut done: Vec<(TaskId, u32, bool)>,
    away: &[(TaskId, u32)],
) -> StoreResult<Vec<EvalStep>> {
    let mut ready = Vec::new();
    while !done.is_empty() {
        let children = p.steps_release_children(&done).await?;
        done.clear();
        let mut skip = Vec::new();
        for c in children {
            if c.state != StepState::Pending {
                continue;
            }
            if away.contains(&(c.task_id, c.position)) {
                skip.push((c, "not chosen by its parent's decision"));
            } else if readiness::released(c.state, c.waiting_on) {
                // Reached through an edge, it has a parent.
                match readiness::release(1, c.live_parents) {
                    Release::Run => ready.push(c),
                    Release::Skip => skip.push((c, "every parent was skipped")),
                }
            }
        }
        for (c, reason) in skip {
            let m = Move {
                task_id: c.task_id,
                step_id: c.id,
                from: StepState::Pending,
                to: StepState::Pending.apply(StepEvent::Skip)?,
                reason,
            };
            check_moved(p.step_move(m).await?, &m)?;
            let task = task_of(tasks, c.task_id);
            task.moved(&m);
            task.skipped += 1;
            done.push((c.task_id, c.position, false));
        }
    }
    ready.sort_unstable_by_key(|c| (c.task_id, c.position));
    Ok(ready)
}

/// The children that the decisions among `changes` did not choose: for each step that
/// became done with results (completed, or resolved by an operator) and decides, those
/// of its `decides` its result's `next` leaves out. A `next` that does not choose is
/// refused (the worker fails such a step, and a resolution is checked first), never
/// taken for a choice of nothing.
fn decided_away(
    changes: &[(Move<'_>, Outcome<'_>)],
    rows: &[&StepRow],
) -> StoreResult<Vec<(TaskId, u32)>> {
    let mut away = Vec::new();
    for ((m, outcome), row) in changes.iter().zip(rows) {
        let (Some(results), false) = (outcome.results, row.decides.is_empty()) else {
            continue;
        };
        if !m.to.is_live() {
            continue;
        }
        let chosen = readiness::decision(&row.name, results, &row.decides_names())
            .map_err(StoreError::Conflict)?;
        for (name, position) in &row.decides {
            if !chosen.iter().any(|c| c == &**name) {
                away.push((m.task_id, *position));
            }
        }
    }
    Ok(away)
}

/// Reaches each step of `waits` (pending, or in error for an operator's retry): one
/// whose signal was delivered already completes with its payload; the others wait,
/// each with its timeout sent to orchestrators, due when the wait would end. Returns
/// the steps that completed (task, position, live), for [`release`].
async fn begin_waits<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    waits: &[EvalStep],
) -> StoreResult<Vec<(TaskId, u32, bool)>> {
    let ids: Vec<StepId> = waits.iter().map(|s| s.id).collect();
    let rows = p.steps_get(&ids, false).await?;
    let mut done = Vec::new();
    for step in waits {
        let (Some(signal), Some((_, row))) = (&step.wait, rows.iter().find(|r| r.0 == step.id))
        else {
            continue;
        };
        let kept = p.signal_get(step.task_id, signal).await?;
        let (event, reason) = match kept {
            Some(_) => (
                StepEvent::Signal,
                format!("signal `{signal}` was delivered before the wait began"),
            ),
            None => (
                StepEvent::Wait,
                format!(
                    "waiting for signal `{signal}` for at most {}",
                    HumanDuration(row.timeout)
                ),
            ),
        };
        let m = Move {
            task_id: step.task_id,
            step_id: step.id,
            from: step.state,
            to: step.state.apply(event)?,
            reason: &reason,
        };
        if let Some(payload) = &kept {
            let outcome = Outcome {
                results: Some(payload),
                error: None,
            };
            check_moved(p.steps_set_outcome(&[(m, outcome)]).await?, &m)?;
            done.push((step.task_id, step.position, true));
        } else {
            // A retried wait starts afresh: no error, no times.
            let moved = if step.state == StepState::Error {
                p.step_reset(m).await?
            } else {
                p.step_move(m).await?
            };
            check_moved(moved, &m)?;
            let timeout = TaskStart {
                task_id: step.task_id,
                expire_wait: Some(step.id),
            };
            p.queue_send(TASK_QUEUE, &timeout, row.timeout).await?;
        }
        task_of(tasks, step.task_id).moved(&m);
    }
    Ok(done)
}

/// Fans out each step of `fans` (pending, or in error for an operator's retry of a
/// source that was not an array): one instance per item of its source, enqueued, and
/// counted in `enqueued` (by the index of the task in `tasks`). A source that is not
/// an array, or one longer than `max_items`, fails the step; an empty one completes it
/// with `[]`. Returns the steps that completed (task, position, live), for
/// [`release`].
async fn expand<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    fans: &[EvalStep],
    enqueued: &mut [usize],
) -> StoreResult<Vec<(TaskId, u32, bool)>> {
    let mut done = Vec::new();
    for step in fans {
        let Some(spec) = &step.for_each else { continue };
        let Some(exec) = p.steps_execution(&[step.id]).await?.pop() else {
            continue;
        };
        let (parent, path) = spec.split();
        let source = match parent {
            None => &*exec.context,
            Some(name) => exec
                .parents
                .iter()
                .find(|(n, _)| &**n == name)
                .map_or(RawValue::NULL, |(_, r)| &**r),
        };
        let items = fan_out::items(source, &path, &spec.source).and_then(|items| {
            match items.len() as u64 {
                n if n > u64::from(spec.max_items) => Err(format!(
                    "for_each `{}` has {n} items, more than max_items ({})",
                    spec.source, spec.max_items
                )),
                _ => Ok(items),
            }
        });
        let t = tasks
            .iter()
            .position(|t| t.id == step.task_id)
            .expect("locked");
        let items = match items {
            Ok(items) => items,
            // Still failing after an operator's retry: it stays in error.
            Err(_) if step.state == StepState::Error => continue,
            Err(why) => {
                let m = Move {
                    task_id: step.task_id,
                    step_id: step.id,
                    from: step.state,
                    to: step.state.apply(StepEvent::FailPermanent)?,
                    reason: &why,
                };
                let outcome = Outcome {
                    results: None,
                    error: Some(&why),
                };
                check_moved(p.steps_set_outcome(&[(m, outcome)]).await?, &m)?;
                tasks[t].moved(&m);
                continue;
            }
        };
        let reason = format!(
            "{} instances, one per item of `{}`",
            items.len(),
            spec.source
        );
        let m = Move {
            task_id: step.task_id,
            step_id: step.id,
            from: step.state,
            to: step.state.apply(StepEvent::Expand)?,
            reason: &reason,
        };
        check_moved(p.step_move(m).await?, &m)?;
        tasks[t].moved(&m);
        // What every instance is given: the step's context and parents' results, the
        // source without its items.
        let rest = fan_out::without(source, &path);
        let context = if parent.is_none() {
            &*rest
        } else {
            &*exec.context
        };
        let parents: Vec<(&str, &RawValue)> = exec
            .parents
            .iter()
            .map(|(n, r)| (&**n, if Some(&**n) == parent { &*rest } else { &**r }))
            .collect();
        let parents = serde_json::value::to_raw_value(&parents).expect("names and JSON serialize");
        let view = InstanceView {
            context,
            parents: &parents,
        };
        let made = format!("instance of `{}`", spec.source);
        let ids = p.steps_insert_instances(step, &items, view, &made).await?;
        tasks[t].progress.add(StepState::Enqueued, ids.len() as u32);
        enqueued[t] += ids.len();
        if ids.is_empty() {
            let reason = "no items: nothing to run";
            done.push(
                complete_fan_out(p, tasks, step.task_id, step.id, step.position, reason).await?,
            );
            continue;
        }
        let messages: Vec<StepMessage> = ids
            .iter()
            .map(|&step_id| StepMessage {
                task_id: step.task_id,
                step_id,
                priority: tasks[t].priority,
                traceparent: tasks[t].traceparent,
            })
            .collect();
        p.queue_send_batch(&step.queue, &messages).await?;
    }
    Ok(done)
}

/// Completes a `for_each` step in progress with its instances' results, in item order
/// (`[]` for none). Returns it (task, position, live), for [`release`].
async fn complete_fan_out<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    task_id: TaskId,
    step_id: StepId,
    position: u32,
    reason: &str,
) -> StoreResult<(TaskId, u32, bool)> {
    let results = p.step_instance_results(task_id, position).await?;
    let m = Move {
        task_id,
        step_id,
        from: StepState::InProgress,
        to: StepState::InProgress.apply(StepEvent::Succeed)?,
        reason,
    };
    let outcome = Outcome {
        results: Some(&results),
        error: None,
    };
    check_moved(p.steps_set_outcome(&[(m, outcome)]).await?, &m)?;
    task_of(tasks, task_id).moved(&m);
    Ok((task_id, position, true))
}

/// An instance's change of state, for [`instances_settled`]: the move, the position
/// of its `for_each` step, and its name.
type InstanceMove<'a> = (Move<'a>, u32, &'a str);

/// `m`, a move of the step `row`, as an instance's, if the step is an instance.
fn instance_move<'a>(m: Move<'a>, row: &'a StepRow) -> Option<InstanceMove<'a>> {
    Some((m, row.instance_of?, row.name.as_str()))
}

/// What the instances of `moved` did to their `for_each` steps: those done count down
/// their step's instances left, and the step completes with their results, in item
/// order, when none is left; one that failed fails its step; an operator's resolution
/// of a failed instance lets its step run on when no other instance is in error.
/// Returns the steps that completed (task, position, live), for [`release`].
async fn instances_settled<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    moved: &[InstanceMove<'_>],
) -> StoreResult<Vec<(TaskId, u32, bool)>> {
    let mut counts: Vec<(TaskId, u32, u32)> = Vec::new();
    for (m, parent, _) in moved {
        let n = u32::from(!m.from.is_done() && m.to.is_done());
        match counts
            .iter_mut()
            .find(|c| (c.0, c.1) == (m.task_id, *parent))
        {
            Some(c) => c.2 += n,
            None => counts.push((m.task_id, *parent, n)),
        }
    }
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let mut steps = p.steps_instances_done(&counts).await?;
    let mut done = Vec::new();
    for step in &mut steps {
        let mine = |(m, parent, _): &&InstanceMove<'_>| {
            m.task_id == step.task_id && *parent == step.position
        };
        let failed = moved
            .iter()
            .filter(mine)
            .find(|(m, ..)| m.to == StepState::Error && m.from != StepState::Error);
        let resolved = moved
            .iter()
            .filter(mine)
            .any(|(m, ..)| m.from == StepState::Error && m.to.is_done());
        let reason;
        let (event, why) = match (step.state, failed) {
            (StepState::InProgress, Some((m, _, name))) => {
                reason = format!("instance `{name}` failed: {}", m.reason);
                (StepEvent::FailPermanent, reason.as_str())
            }
            (StepState::Error, None)
                if resolved && p.step_instances_failed(step.task_id, step.position).await? == 0 =>
            {
                (StepEvent::Expand, "its failed instances were resolved")
            }
            _ => (StepEvent::Expand, ""),
        };
        if !why.is_empty() {
            let m = Move {
                task_id: step.task_id,
                step_id: step.id,
                from: step.state,
                to: step.state.apply(event)?,
                reason: why,
            };
            let moved = if event == StepEvent::FailPermanent {
                let outcome = Outcome {
                    results: None,
                    error: Some(why),
                };
                p.steps_set_outcome(&[(m, outcome)]).await?
            } else {
                // Running on: its error and end are cleared.
                p.step_reset(m).await?
            };
            check_moved(moved, &m)?;
            task_of(tasks, step.task_id).moved(&m);
            step.state = m.to;
        }
        if step.state == StepState::InProgress && step.left == Some(0) {
            let reason = "every instance is done";
            done.push(
                complete_fan_out(p, tasks, step.task_id, step.id, step.position, reason).await?,
            );
        }
    }
    Ok(done)
}

pub(crate) async fn task_signal<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    name: &str,
    payload: &RawValue,
) -> StoreResult<Signalled> {
    // The task's lock serializes the deliveries to it: the check holds until commit.
    let mut task = lock_task(p, task_id).await?;
    if p.signal_get(task_id, name).await?.is_some() {
        return Err(StoreError::Conflict(format!(
            "signal `{name}` was already delivered to task {task_id}"
        )));
    }
    if task.state.is_final() {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is {}: it takes no more signals",
            task.state
        )));
    }
    p.signal_insert(task_id, name, payload).await?;
    let waiting = p.steps_waiting_for(task_id, name).await?;
    let reason = format!("signal `{name}` delivered");
    let mut changes = Vec::with_capacity(waiting.len());
    for step in &waiting {
        let m = Move {
            task_id,
            step_id: step.id,
            from: step.state,
            to: step.state.apply(StepEvent::Signal)?,
            reason: &reason,
        };
        let outcome = Outcome {
            results: Some(payload),
            error: None,
        };
        changes.push((m, outcome));
    }
    if p.steps_set_outcome(&changes).await? != changes.len() as u64 {
        return Err(StoreError::Conflict(format!(
            "a step of task {task_id} waiting for `{name}` changed as the signal arrived"
        )));
    }
    for (m, _) in &changes {
        task.moved(m);
    }
    let done = waiting
        .iter()
        .map(|s| (task_id, s.position, true))
        .collect();
    let ready = release(p, std::slice::from_mut(&mut task), done, &[]).await?;
    settle(p, &mut task, ready).await?;
    Ok(Signalled {
        completed: waiting.iter().map(|s| s.id).collect(),
        task_state: task.state,
        skipped: task.skipped,
    })
}

/// [`settle_all`] for one task; returns the number of steps enqueued.
async fn settle<P: Primitives>(
    p: &mut P,
    task: &mut Task,
    ready: Vec<EvalStep>,
) -> StoreResult<usize> {
    Ok(settle_all(p, std::slice::from_mut(task), ready).await?[0])
}

/// Applies a change to tasks: enqueues the `ready` steps of those in progress and
/// completes or fails each in-progress task its counters say is finished, then writes
/// the counters that changed. Returns the steps enqueued per task, in `tasks` order.
async fn settle_all<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    mut ready: Vec<EvalStep>,
) -> StoreResult<Vec<usize>> {
    let mut enqueued = vec![0; tasks.len()];
    let running = |tasks: &[Task], s: &EvalStep| {
        tasks
            .iter()
            .any(|t| t.id == s.task_id && t.state == TaskState::InProgress)
    };
    ready.retain(|s| running(tasks, s));
    // Steps that wait run no handler: each completes with its kept signal or waits,
    // and one that completes releases its children in turn.
    // Steps that fan out create their instances, enqueued, instead: an empty array
    // completes the step at once.
    let special = |s: &EvalStep| s.wait.is_some() || s.for_each.is_some();
    while ready.iter().any(special) {
        let reached: Vec<EvalStep>;
        (reached, ready) = ready.into_iter().partition(special);
        let (waits, fans): (Vec<EvalStep>, Vec<EvalStep>) =
            reached.into_iter().partition(|s| s.wait.is_some());
        let mut done = begin_waits(p, tasks, &waits).await?;
        done.extend(expand(p, tasks, &fans, &mut enqueued).await?);
        let released = release(p, tasks, done, &[]).await?;
        ready.extend(released.into_iter().filter(|s| running(tasks, s)));
        ready.sort_unstable_by_key(|c| (c.task_id, c.position));
    }
    if !ready.is_empty() {
        let to = StepState::Pending.apply(StepEvent::Enqueue)?;
        let ids: Vec<(TaskId, StepId)> = ready.iter().map(|s| (s.task_id, s.id)).collect();
        if p.steps_enqueue(&ids, "dependencies done").await? != ids.len() as u64 {
            return Err(StoreError::Conflict(
                "a ready step was no longer pending".into(),
            ));
        }
        let mut messages = Vec::with_capacity(ready.len());
        for s in &ready {
            let t = tasks
                .iter()
                .position(|t| t.id == s.task_id)
                .expect("ready steps are of these tasks");
            tasks[t].progress.shift(StepState::Pending, to);
            enqueued[t] += 1;
            let message = StepMessage {
                task_id: s.task_id,
                step_id: s.id,
                priority: tasks[t].priority,
                traceparent: tasks[t].traceparent,
            };
            messages.push((&*s.queue, message));
        }
        // One batch per queue, in the order the steps were made ready.
        for (queue, messages) in by_queue(messages) {
            p.queue_send_batch(queue, &messages).await?;
        }
    }
    let mut finished: Vec<(usize, TaskEvent, Cow<'static, str>)> = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if task.state != TaskState::InProgress {
            continue;
        }
        match task.progress.outcome() {
            Readiness::Complete => {
                finished.push((i, TaskEvent::Complete, "all steps complete".into()));
            }
            Readiness::Failed => {
                let failed = p.task_failed_step(task.id).await?;
                let reason = format!(
                    "step `{}` failed and nothing else can progress",
                    failed.as_deref().unwrap_or("?")
                );
                finished.push((i, TaskEvent::Fail, reason.into()));
            }
            Readiness::Running => {}
        }
    }
    let events: Vec<(usize, TaskEvent, &str)> =
        finished.iter().map(|(i, e, r)| (*i, *e, &**r)).collect();
    move_tasks(p, tasks, &events).await?;
    let changed: Vec<(TaskId, Progress)> = tasks
        .iter()
        .filter(|t| t.progress != t.stored)
        .map(|t| (t.id, t.progress))
        .collect();
    if !changed.is_empty() {
        p.tasks_set_progress(&changed).await?;
        for t in tasks.iter_mut() {
            t.stored = t.progress;
        }
    }
    Ok(enqueued)
}

/// Applies `event` to the task: compare-and-set plus transition.
async fn move_task<P: Primitives>(
    p: &mut P,
    task: &mut Task,
    event: TaskEvent,
    reason: &str,
) -> StoreResult<()> {
    move_tasks(p, std::slice::from_mut(task), &[(0, event, reason)]).await
}

/// Applies each (index into `tasks`, event, reason), one statement for all.
async fn move_tasks<P: Primitives>(
    p: &mut P,
    tasks: &mut [Task],
    events: &[(usize, TaskEvent, &str)],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut moves = Vec::with_capacity(events.len());
    for &(i, event, reason) in events {
        let task = &tasks[i];
        moves.push(TaskMove {
            task_id: task.id,
            from: task.state,
            to: task.state.apply(event)?,
            reason,
        });
    }
    if p.tasks_move(&moves).await? != moves.len() as u64 {
        return Err(StoreError::Conflict(match &moves[..] {
            [m] => format!("task {} is no longer {}", m.task_id, m.from),
            _ => "a task of the batch changed while it was moved".into(),
        }));
    }
    let mut ended = Vec::new();
    for (&(i, ..), m) in events.iter().zip(&moves) {
        tasks[i].state = m.to;
        // A task leaving its slot frees it; a pending one cancelled may have been the
        // one next in line, asked to start: the line moves on either way.
        let left = matches!(m.from, TaskState::InProgress | TaskState::Pending) && m.to.is_final();
        if tasks[i].keyed && left {
            ended.push(m.task_id);
        }
    }
    if !ended.is_empty() {
        release_slots(p, &ended).await?;
    }
    Ok(())
}

fn check_moved(rows: u64, m: &Move<'_>) -> StoreResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "step {} is no longer {}",
            m.step_id, m.from
        )))
    }
}
