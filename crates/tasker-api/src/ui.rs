//! The dashboard at `/ui`: one page and its script, style and layout library, compiled
//! into the binary so it works offline. The files hold no data: the page reads the
//! `/v1` routes with the token its user gives it (kept in the tab's session storage,
//! sent as a Bearer header, never a cookie, so other sites cannot act through it).
//! The Content-Security-Policy allows nothing but this server's own files, so text a
//! task carries cannot run as script in the page.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");
/// dagre lays the graphs out (layered, as Graphviz's `dot` does); MIT, `ui/vendor`.
const LAYOUT: &str = include_str!("../ui/vendor/dagre-3.1.3.min.js");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| file("text/html; charset=utf-8", INDEX)))
        .route("/ui/", get(|| file("text/html; charset=utf-8", INDEX)))
        .route("/ui/app.js", get(|| file("text/javascript", SCRIPT)))
        .route("/ui/app.css", get(|| file("text/css", STYLE)))
        .route("/ui/dagre.min.js", get(|| file("text/javascript", LAYOUT)))
}

async fn file(media: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, media),
            // The files change with the binary: always ask.
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("content-security-policy"), POLICY),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
        ],
        body,
    )
        .into_response()
}
