//! What every request passes before a handler: a declared body over the limit is
//! refused before it is read (so `Expect: 100-continue` gets a 413, not a `100
//! Continue`), and, when the server runs without tokens, requests from other origins
//! are refused. Without tokens a browser is the attacker's way in: any web page can
//! send a request to a server on loopback (cross-site request forgery), and a name the
//! attacker controls can be made to resolve to 127.0.0.1 (DNS rebinding). So a
//! request whose `Origin` is not the server it addresses, or (unless the operator
//! chose to serve without tokens on any address) whose `Host` is not a loopback name,
//! gets a 403. Every response, refusals included, says its type is the one to use
//! (`nosniff`), so no browser reads a JSON body that echoes input as a page.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, HOST, ORIGIN, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

pub async fn guard<S>(State(state): State<AppState<S>>, req: Request, next: Next) -> Response {
    let mut response = admit(&state, req, next).await;
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn admit<S>(state: &AppState<S>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.body_limit as u64) {
        return crate::body::too_large().into_response();
    }
    if state.tokens.is_empty()
        && let Err(refused) = same_origin(&req, state.any_host)
    {
        return refused.into_response();
    }
    next.run(req).await
}

fn same_origin(req: &Request, any_host: bool) -> Result<(), ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(HOST);
    if let Some(host) = host
        && !any_host
        && !is_loopback(host)
    {
        return Err(forbidden(format!(
            "without API tokens this server answers only requests addressed to a loopback name (Host: {host})"
        )));
    }
    if let Some(origin) = header(ORIGIN) {
        let own = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(h))
        });
        if !own {
            return Err(forbidden(format!(
                "without API tokens this server answers only its own pages (Origin: {origin})"
            )));
        }
    }
    Ok(())
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", message)
}

/// `localhost`, a loopback address, or either with a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "[2001:db8::1]",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
