//! `/v1/schedules`: run a registered template on a cron schedule.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tasker_core::schedule::CatchUp;
use tasker_core::store::Store;
use tasker_core::views::{ScheduleList, ScheduleView};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::tasks::find_template;
use crate::{AppState, json};

/// `POST /v1/schedules`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    name: String,
    namespace: String,
    /// The template's name.
    template: String,
    /// The newest registered version when absent.
    version: Option<String>,
    cron: String,
    /// UTC when absent.
    timezone: Option<String>,
    context: Option<Box<RawValue>>,
    /// `once` when absent.
    catch_up: Option<String>,
}

pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    JsonBody(req): JsonBody<CreateSchedule>,
) -> Result<Response, ApiError> {
    let catch_up: CatchUp = match req.catch_up.as_deref() {
        None => CatchUp::default(),
        Some(c) => c
            .parse()
            .map_err(|why| ApiError::bad_request("invalid_request", why))?,
    };
    let template = find_template(
        &state,
        &req.namespace,
        &req.template,
        req.version.as_deref(),
    )
    .await?;
    let created = state
        .engine
        .schedule_create(
            &req.name,
            &template,
            &req.cron,
            req.timezone.as_deref().unwrap_or("UTC"),
            req.context.as_deref().map_or("{}", RawValue::get),
            catch_up,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &ScheduleView::new(&created)))
}

/// `GET /v1/schedules`.
pub async fn list<S: Store>(State(state): State<AppState<S>>) -> Result<Response, ApiError> {
    let schedules = state.engine.schedules().await?;
    Ok(json(StatusCode::OK, &ScheduleList::new(&schedules)))
}

#[derive(Serialize)]
pub struct SchedulePaused {
    schedule: String,
    paused: bool,
    /// False when the schedule already was so.
    changed: bool,
}

async fn set_paused<S: Store>(
    state: AppState<S>,
    name: String,
    paused: bool,
) -> Result<Json<SchedulePaused>, ApiError> {
    let changed = state.engine.pause_schedule(&name, paused).await?;
    Ok(Json(SchedulePaused {
        schedule: name,
        paused,
        changed,
    }))
}

/// `POST /v1/schedules/{name}/pause`.
pub async fn pause<S: Store>(
    State(state): State<AppState<S>>,
    Path(name): Path<String>,
) -> Result<Json<SchedulePaused>, ApiError> {
    set_paused(state, name, true).await
}

/// `POST /v1/schedules/{name}/resume`.
pub async fn resume<S: Store>(
    State(state): State<AppState<S>>,
    Path(name): Path<String>,
) -> Result<Json<SchedulePaused>, ApiError> {
    set_paused(state, name, false).await
}

/// `DELETE /v1/schedules/{name}`: the tasks it created stay.
pub async fn delete<S: Store>(
    State(state): State<AppState<S>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
