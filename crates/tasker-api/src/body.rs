//! Request bodies read with the API's own errors: malformed JSON is a 400
//! `invalid_json`, a body over the limit a 413 `payload_too_large`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The raw body, within the configured limit.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than the server's limit (api.body_limit)",
                    )
                } else {
                    ApiError::bad_request("invalid_body", rejection.body_text())
                }
            })
    }
}

/// A JSON body decoded into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
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
