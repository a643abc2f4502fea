//! Request bodies read with the API's own errors: a body must declare its media type
//! (415 `unsupported_media_type` otherwise: a form or `text/plain` is what a foreign web
//! page can send without asking), malformed JSON is a 400 `invalid_json`, a body over
//! the limit a 413 `payload_too_large`, one that does not arrive in time a 408.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The media types a JSON body may declare.
const JSON: &[&str] = &["application/json"];

/// A template: JSON or YAML.
const TEMPLATE: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
];

pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server's limit (api.body_limit)",
    )
}

/// Refuses a body whose `Content-Type` (without its parameters) is not one of
/// `accepted`; returns the one it is.
fn check_type(req: &Request, accepted: &[&'static str]) -> Result<&'static str, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match declared.and_then(|t| accepted.iter().find(|a| a.eq_ignore_ascii_case(t))) {
        Some(media) => Ok(media),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be sent as {} (Content-Type: {})",
                accepted.join(" or "),
                declared.unwrap_or("none")
            ),
        )),
    }
}

/// The body, read within the server's `read_timeout` (408 `request_timeout` after it:
/// a client that trickles its body must not hold the request forever).
async fn bytes<S: Send + Sync>(req: Request, state: &AppState<S>) -> Result<Bytes, ApiError> {
    let read = Bytes::from_request(req, state);
    let Ok(read) = tokio::time::timeout(state.read_timeout, read).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {:?} (api.read_timeout)",
                state.read_timeout
            ),
        ));
    };
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

/// A template's text, within the configured limit, and whether it was sent as JSON.
pub struct TemplateBody {
    pub json: bool,
    pub text: Bytes,
}

impl<S: Send + Sync> FromRequest<AppState<S>> for TemplateBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState<S>) -> Result<Self, ApiError> {
        let json = check_type(&req, TEMPLATE)?.eq_ignore_ascii_case("application/json");
        let text = bytes(req, state).await?;
        Ok(TemplateBody { json, text })
    }
}

/// A JSON body decoded into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<AppState<S>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState<S>) -> Result<Self, ApiError> {
        check_type(&req, JSON)?;
        let bytes = bytes(req, state).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            let code = if e.is_syntax() || e.is_eof() {
                "invalid_json"
            } else {
                "invalid_request"
            };
            ApiError::bad_request(code, format!("request body: {e}"))
        })
    }
}
