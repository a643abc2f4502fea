//! `/v1/tasks` and `/v1/steps`: create, inspect, list, cancel, retry, resolve.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::store::{Store, TaskFilter, TaskListParams, TaskRecord, TemplateListParams};
use tasker_core::template::{TaskTemplate, parse_template};
use tasker_core::views::{DeadLetters, History, SignalView, TaskView};
use tasker_core::{TaskState, names};

use axum::response::Response;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::{AppState, json, query};

/// `POST /v1/tasks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    namespace: String,
    name: String,
    /// The newest registered version when absent.
    version: Option<String>,
    context: Option<Box<RawValue>>,
    idempotency_key: Option<String>,
    /// The template's when absent.
    priority: Option<i32>,
}

#[derive(Serialize)]
pub struct Created {
    task_id: TaskId,
    created: bool,
}

pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    JsonBody(req): JsonBody<CreateTask>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let template = find_template(&state, &req.namespace, &req.name, req.version.as_deref()).await?;
    let context = req.context.as_deref().map_or("{}", RawValue::get);
    let created = state
        .engine
        .submit_with_priority(
            &template,
            context,
            req.idempotency_key.as_deref(),
            req.priority,
        )
        .await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Created {
            task_id: created.task_id,
            created: created.created,
        }),
    ))
}

/// The registered template, the newest version if none is named. A named version is
/// parsed once and then served from the state's cache.
pub(crate) async fn find_template<S: Store>(
    state: &AppState<S>,
    namespace: &str,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<TaskTemplate>, ApiError> {
    check_template_name(namespace, name, version)?;
    let cached = |key: &str| {
        state
            .templates
            .lock()
            .expect("template cache")
            .get(key)
            .cloned()
    };
    if let Some(v) = version
        && let Some(t) = cached(&format!("{namespace}/{name}@{v}"))
    {
        return Ok(t);
    }
    let versions = state
        .engine
        .templates(TemplateListParams {
            namespace: Some(namespace),
            name: Some(name),
            after: None,
            limit: u32::MAX,
        })
        .await?;
    let found = versions
        .iter()
        .filter(|t| version.is_none_or(|v| t.version == v))
        .max_by(|a, b| newest(&a.version, &b.version));
    let Some(record) = found else {
        let what = match version {
            Some(v) => format!("{namespace}/{name}@{v}"),
            None => format!("{namespace}/{name}"),
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_template",
            format!("no template {what} is registered (POST /v1/templates registers one)"),
        ));
    };
    let key = format!("{}/{}@{}", record.namespace, record.name, record.version);
    if let Some(t) = cached(&key) {
        return Ok(t);
    }
    let parsed = parse_template(&record.definition, "stored template")
        .map(Arc::new)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    state
        .templates
        .lock()
        .expect("template cache")
        .insert(key, parsed.clone());
    Ok(parsed)
}

/// Refuses, before any SQL, what no registered template can be named: registration
/// holds templates to these rules, and PostgreSQL cannot even compare some text (a NUL).
fn check_template_name(namespace: &str, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    let invalid = |field: &str, value: &str, why: String| {
        ApiError::bad_request(
            "invalid_request",
            format!("{field} `{}`: {why}", value.escape_debug()),
        )
    };
    names::check_queue_name(namespace).map_err(|why| invalid("namespace", namespace, why))?;
    names::check_name(name).map_err(|why| invalid("name", name, why))?;
    if let Some(v) = version {
        semver::Version::parse(v)
            .map_err(|e| invalid("version", v, format!("is not a semantic version: {e}")))?;
    }
    Ok(())
}

fn newest(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

pub(crate) fn task_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("`{id}` is not a task id: {e}")))
}

pub async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = state.engine.task(task_id(&id)?).await?;
    Ok(json(StatusCode::OK, &TaskView::new(&detail)))
}

/// `GET /v1/tasks/{id}/history`: the task's transitions, oldest first.
pub async fn history<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    let task_id = task_id(&id)?;
    let transitions = state.engine.history(task_id).await?;
    Ok(Json(History::new(task_id, transitions)))
}

/// `GET /v1/dead-letters` query: one queue, or every queue.
#[derive(Deserialize)]
pub struct DeadLetterQuery {
    queue: Option<String>,
}

/// `GET /v1/dead-letters`.
pub async fn dead_letters<S: Store>(
    State(state): State<AppState<S>>,
    params: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetters>, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let letters = state.engine.dead_letters(q.queue.as_deref()).await?;
    Ok(Json(DeadLetters::new(letters)))
}

/// `GET /v1/tasks` query.
#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    #[serde(flatten)]
    filter: FilterQuery,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Which tasks `GET /v1/tasks` lists and `GET /v1/tasks/counts` counts.
#[derive(Deserialize)]
pub struct FilterQuery {
    namespace: Option<String>,
    /// The template's name.
    name: Option<String>,
    /// RFC 3339: tasks created at or after it.
    created_after: Option<String>,
    /// RFC 3339: tasks created before it.
    created_before: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> Result<TaskFilter<'_>, ApiError> {
        Ok(TaskFilter {
            namespace: query::namespace(self.namespace.as_deref())?,
            name: query::name(self.name.as_deref())?,
            created_from: query::timestamp("created_after", self.created_after.as_deref())?,
            created_to: query::timestamp("created_before", self.created_before.as_deref())?,
        })
    }
}

#[derive(Serialize)]
struct TaskSummary<'a> {
    task_id: TaskId,
    namespace: &'a str,
    name: &'a str,
    version: &'a str,
    state: &'a str,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct TaskPage<'a> {
    tasks: Vec<TaskSummary<'a>>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<TaskId>,
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let task_state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<TaskState>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("state: {e}")))
        })
        .transpose()?;
    let limit = query::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = q.cursor.as_deref().map(task_id).transpose()?;
    // One more than asked tells whether another page exists.
    let mut tasks = state
        .engine
        .tasks(TaskListParams {
            state: task_state,
            filter: q.filter.filter()?,
            before,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = if query::truncate(&mut tasks, limit) {
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    let page = TaskPage {
        tasks: tasks.iter().map(summary).collect(),
        next_cursor,
    };
    Ok(json(StatusCode::OK, &page))
}

/// How many tasks are in each task state, every state named (0 when none).
#[derive(Serialize)]
pub struct Counts {
    counts: BTreeMap<&'static str, u64>,
}

/// `GET /v1/tasks/counts`.
pub async fn counts<S: Store>(
    State(state): State<AppState<S>>,
    params: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<Json<Counts>, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let found = state.engine.task_counts(q.filter()?).await?;
    let mut counts: BTreeMap<&'static str, u64> =
        TaskState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (s, n) in found {
        counts.insert(s.as_str(), n);
    }
    Ok(Json(Counts { counts }))
}

fn summary(t: &TaskRecord) -> TaskSummary<'_> {
    TaskSummary {
        task_id: t.id,
        namespace: &t.namespace,
        name: &t.name,
        version: &t.version,
        state: t.state.as_str(),
        created_at: t.created_at.to_string(),
        updated_at: t.updated_at.to_string(),
    }
}

#[derive(Serialize)]
pub struct TaskStateView {
    task_id: TaskId,
    state: &'static str,
}

pub async fn cancel<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<TaskStateView>, ApiError> {
    let id = task_id(&id)?;
    let new_state = state.engine.cancel(id, "cancelled through the API").await?;
    Ok(Json(TaskStateView {
        task_id: id,
        state: new_state.as_str(),
    }))
}

#[derive(Serialize)]
pub struct Retried {
    task_id: TaskId,
    enqueued: usize,
}

pub async fn retry<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Retried>, ApiError> {
    let id = task_id(&id)?;
    let enqueued = state.engine.retry(id).await?;
    Ok(Json(Retried {
        task_id: id,
        enqueued,
    }))
}

/// `POST /v1/tasks/{id}/signals/{name}`: the body is the payload.
pub async fn signal<S: Store>(
    State(state): State<AppState<S>>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(payload): JsonBody<Box<RawValue>>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let signalled = state.engine.signal(id, &name, payload.get()).await?;
    Ok(json(
        StatusCode::OK,
        &SignalView::new(id, &name, &signalled),
    ))
}

/// `GET /v1/queues`.
pub async fn queues<S: Store>(State(state): State<AppState<S>>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &state.engine.queues().await?))
}

#[derive(Serialize)]
pub struct Paused {
    queue: String,
    paused: bool,
    /// False when the queue already was so.
    changed: bool,
}

/// `POST /v1/queues/{name}/pause`.
pub async fn pause<S: Store>(
    State(state): State<AppState<S>>,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, ApiError> {
    let changed = state.engine.pause_queue(&queue, true).await?;
    Ok(Json(Paused {
        queue,
        paused: true,
        changed,
    }))
}

/// `POST /v1/queues/{name}/resume`.
pub async fn resume<S: Store>(
    State(state): State<AppState<S>>,
    Path(queue): Path<String>,
) -> Result<Json<Paused>, ApiError> {
    let changed = state.engine.pause_queue(&queue, false).await?;
    Ok(Json(Paused {
        queue,
        paused: false,
        changed,
    }))
}

#[derive(Serialize)]
pub struct TemplatePaused {
    template: String,
    paused: bool,
    /// False when the template already was so.
    changed: bool,
}

/// `POST /v1/templates/{namespace}/{name}/pause` and `…/resume`.
async fn pause_template<S: Store>(
    state: AppState<S>,
    (namespace, name): (String, String),
    paused: bool,
) -> Result<Json<TemplatePaused>, ApiError> {
    let changed = state
        .engine
        .pause_template(&namespace, &name, paused)
        .await?;
    Ok(Json(TemplatePaused {
        template: format!("{namespace}/{name}"),
        paused,
        changed,
    }))
}

pub async fn pause_template_route<S: Store>(
    State(state): State<AppState<S>>,
    Path(key): Path<(String, String)>,
) -> Result<Json<TemplatePaused>, ApiError> {
    pause_template(state, key, true).await
}

pub async fn resume_template_route<S: Store>(
    State(state): State<AppState<S>>,
    Path(key): Path<(String, String)>,
) -> Result<Json<TemplatePaused>, ApiError> {
    pause_template(state, key, false).await
}

/// `POST /v1/steps/{id}/resolve`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    results: Box<RawValue>,
}

#[derive(Serialize)]
pub struct Resolved {
    step_id: StepId,
    task_state: &'static str,
}

pub async fn resolve<S: Store>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Resolve>,
) -> Result<Json<Resolved>, ApiError> {
    let step_id: StepId = id.parse().map_err(|e| {
        ApiError::bad_request("invalid_id", format!("`{id}` is not a step id: {e}"))
    })?;
    let resolved = state.engine.resolve(step_id, &req.results).await?;
    Ok(Json(Resolved {
        step_id,
        task_state: resolved.task_state.as_str(),
    }))
}
