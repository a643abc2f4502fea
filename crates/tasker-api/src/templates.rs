//! `/v1/templates`: list and register templates.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tasker_core::store::{Registration, Store, TemplateListParams};
use tasker_core::template::{parse_json_template, parse_template};

use crate::body::TemplateBody;
use crate::error::ApiError;
use crate::{AppState, json, query};

#[derive(Serialize)]
struct TemplateView<'a> {
    namespace: &'a str,
    name: &'a str,
    version: &'a str,
    created_at: String,
    /// The template as registered (defaults resolved).
    definition: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct TemplatePage<'a> {
    templates: Vec<TemplateView<'a>>,
    /// Pass as `cursor` for the next page (`namespace/name@version`); null on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/templates` query.
#[derive(Deserialize)]
pub struct ListQuery {
    namespace: Option<String>,
    /// One template's versions (with `namespace`).
    name: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Definitions can be large (up to the body limit each), so pages are small.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = q.cursor.as_deref().map(cursor).transpose()?;
    let mut all = state
        .engine
        .templates(TemplateListParams {
            namespace: query::namespace(q.namespace.as_deref())?,
            name: query::name(q.name.as_deref())?,
            after,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = query::truncate(&mut all, limit)
        .then(|| all.last())
        .flatten()
        .map(|t| format!("{}/{}@{}", t.namespace, t.name, t.version));
    let templates = all
        .iter()
        .map(|t| TemplateView {
            namespace: &t.namespace,
            name: &t.name,
            version: &t.version,
            created_at: t.created_at.to_string(),
            definition: serde_json::from_str(&t.definition).ok(),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &TemplatePage {
            templates,
            next_cursor,
        },
    ))
}

/// A `namespace/name@version` cursor.
fn cursor(raw: &str) -> Result<(&str, &str, &str), ApiError> {
    raw.split_once('/')
        .and_then(|(namespace, rest)| {
            let (name, version) = rest.split_once('@')?;
            Some((namespace, name, version))
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "cursor: `{}` is not `namespace/name@version`",
                    raw.escape_debug()
                ),
            )
        })
}

#[derive(Serialize)]
struct Registered {
    template: String,
    registered: bool,
}

/// Registers the template in the body (YAML or JSON): 201 when new, 200 when the same
/// content is registered already, 409 when the version holds different content.
pub async fn register<S: Store>(
    State(state): State<AppState<S>>,
    TemplateBody {
        json: as_json,
        text: body,
    }: TemplateBody,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_template", "the template is not UTF-8 text"))?;
    let parse = if as_json {
        parse_json_template
    } else {
        parse_template
    };
    let template = parse(text, "request body")
        .map_err(|e| ApiError::bad_request("invalid_template", e.to_string()))?;
    let registration = state.engine.register(&template).await?;
    let (status, registered) = match registration {
        Registration::Registered => (StatusCode::CREATED, true),
        Registration::Unchanged => (StatusCode::OK, false),
    };
    Ok(json(
        status,
        &Registered {
            template: template.key().to_string(),
            registered,
        },
    ))
}
