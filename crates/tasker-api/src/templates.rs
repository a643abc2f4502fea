//! `/v1/templates`: list and register templates.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::value::RawValue;
use tasker_core::store::{Registration, Store};
use tasker_core::template::{parse_json_template, parse_template};

use crate::body::TemplateBody;
use crate::error::ApiError;
use crate::{AppState, json};

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
struct TemplateList<'a> {
    templates: Vec<TemplateView<'a>>,
}

pub async fn list<S: Store>(State(state): State<AppState<S>>) -> Result<Response, ApiError> {
    let all = state.engine.store().template_list().await?;
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
    Ok(json(StatusCode::OK, &TemplateList { templates }))
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
