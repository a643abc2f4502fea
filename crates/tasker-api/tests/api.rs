//! The API's router, in memory, over an embedded engine.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tasker_api::{ApiConfig, Closing, MAX_STREAMS, OPENAPI, ROUTES, Token, router};
use tasker_core::event::{EventBus, EventKind};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Running};
use tasker_store::sqlite::SqliteStore;
use tower::ServiceExt;

const CHAIN: &str = "namespace: api\nname: chain\nversion: 1.0.0\ncontext_schema:\n  type: object\n  properties:\n    start: {type: integer}\nsteps:\n  - {name: a, handler: sum}\n  - {name: b, handler: sum, depends_on: [a]}\n";
const APPROVAL: &str = "namespace: api\nname: approval\nversion: 1.0.0\nsteps:\n  - {name: draft, handler: echo}\n  - {name: approve, depends_on: [draft], wait_for: {signal: approval, timeout: 1h}}\n  - {name: publish, handler: echo, depends_on: [approve]}\n";
const FAILING: &str = "namespace: api\nname: failing\nversion: 1.0.0\nsteps:\n  - {name: charge, handler: fail, config: {message: declined}}\n  - {name: ship, handler: sum, depends_on: [charge]}\n";

struct Server {
    router: Router,
    /// The engine's own bus: the events of this server alone.
    events: EventBus,
    /// Ends this server's live streams.
    closing: Closing,
    _running: Running,
}

async fn server(tokens: &[&str]) -> Server {
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let events = EventBus::default();
    let config = EngineConfig {
        events: events.clone(),
        ..EngineConfig::embedded()
    };
    let engine = Engine::new(store, HandlerRegistry::with_builtins(), config);
    let running = engine.start();
    let config = ApiConfig {
        tokens: tokens.iter().map(|t| Token::parse(t).unwrap()).collect(),
        body_limit: 64 * 1024,
        read_timeout: Duration::from_secs(30),
        any_host: false,
        closing: Closing::default(),
    };
    Server {
        closing: config.closing.clone(),
        router: router(engine, config),
        events,
        _running: running,
    }
}

/// (status, JSON body — or the text as a JSON string when it is not JSON). A body is
/// sent as YAML to `/v1/templates`, as JSON elsewhere.
async fn call(
    s: &Server,
    method: &str,
    uri: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    if body.is_some() {
        let media = if uri == "/v1/templates" {
            "application/yaml"
        } else {
            "application/json"
        };
        headers.push(("content-type", media.to_owned()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(s, method, uri, &headers, body.unwrap_or("")).await
}

/// A request with exactly these headers: (status, JSON body or text).
async fn send(
    s: &Server,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let response = s.router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn register(s: &Server, yaml: &str) {
    let (status, _) = call(s, "POST", "/v1/templates", Some(yaml), None).await;
    assert!(status.is_success(), "{status}");
}

/// Submits the task `body` names; its id.
async fn create(s: &Server, body: &str) -> String {
    let (status, created) = call(s, "POST", "/v1/tasks", Some(body), None).await;
    assert!(status.is_success(), "{status}: {created}");
    created["task_id"].as_str().unwrap().to_owned()
}

async fn wait_final(s: &Server, id: &str) -> Value {
    for _ in 0..200 {
        let (status, task) = call(s, "GET", &format!("/v1/tasks/{id}"), None, None).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        if ["complete", "error", "cancelled"].contains(&task["state"].as_str().unwrap()) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_register_once_and_versions_are_immutable() {
    let s = server(&[]).await;
    let (status, body) = call(&s, "POST", "/v1/templates", Some(CHAIN), None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"template": "api/chain@1.0.0", "registered": true})
    );
    let (status, body) = call(&s, "POST", "/v1/templates", Some(CHAIN), None).await;
    assert_eq!(
        (status, body["registered"].clone()),
        (StatusCode::OK, json!(false))
    );
    let changed = CHAIN.replace(
        "handler: sum}\n  - {name: b",
        "handler: noop}\n  - {name: b",
    );
    let (status, body) = call(&s, "POST", "/v1/templates", Some(&changed), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "conflict");
    assert!(body["message"].as_str().unwrap().contains("immutable"));
    let (status, body) = call(
        &s,
        "POST",
        "/v1/templates",
        Some("namespace: x\nsteps: []\n"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_template"))
    );
    let (status, body) = call(&s, "GET", "/v1/templates", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &body["templates"][0];
    assert_eq!(
        (listed["namespace"].as_str(), listed["version"].as_str()),
        (Some("api"), Some("1.0.0"))
    );
    assert_eq!(listed["definition"]["steps"][1]["depends_on"], json!(["a"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_created_once_per_key_and_runs_to_completion() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let body = r#"{"namespace": "api", "name": "chain", "context": {"start": 5}, "idempotency_key": "k1"}"#;
    let (status, created) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["created"], true);
    let (status, again) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["task_id"].clone(), again["created"].clone()),
        (created["task_id"].clone(), json!(false))
    );

    let task = wait_final(&s, created["task_id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "complete");
    assert_eq!(task["context"], json!({"start": 5}));
    assert_eq!(task["idempotency_key"], "k1");
    let steps = task["steps"].as_array().unwrap();
    assert_eq!(steps[0]["results"], json!({"value": 6}));
    assert_eq!(steps[1]["results"], json!({"value": 7}));
    assert_eq!(steps[1]["depends_on"], json!(["a"]));
    for step in steps {
        assert_eq!(step["attempts"], 1);
        assert!(step["started_at"].as_str().unwrap().ends_with('Z'));
        assert!(step["duration_ms"].is_u64());
    }

    // A key is at most 255 characters, as the document's `maxLength` counts them: not bytes.
    let submit = |key: String| json!({"namespace": "api", "name": "chain", "idempotency_key": key});
    let body = submit("é".repeat(255)).to_string();
    let (status, created) = call(&s, "POST", "/v1/tasks", Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let body = submit("k".repeat(256)).to_string();
    let (status, error) = call(&s, "POST", "/v1/tasks", Some(&body), None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_code() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let cases: &[(&str, &str, Option<&str>, StatusCode, &str)] = &[
        (
            "POST",
            "/v1/tasks",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "extra": 1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "nope"}"#),
            StatusCode::NOT_FOUND,
            "unknown_template",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "version": "9.9.9"}"#),
            StatusCode::NOT_FOUND,
            "unknown_template",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "context": {"start": "x"}}"#),
            StatusCode::BAD_REQUEST,
            "invalid_context",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "context": [1]}"#),
            StatusCode::BAD_REQUEST,
            "invalid_context",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "idempotency_key": "a\u0000b"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "context": {"note": "a\u0000b"}}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/tasks?namespace=a%00b",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "ch\u0000ain"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "API", "name": "chain"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "chain", "version": "1.0.0\u0000"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/tasks?namespace=Upper",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/tasks?namespace=a0000000000000000000000000000000000000000",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/tasks/01a21b7e-8efb-7081-ae3f-03e03d380a55",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/v1/tasks/not-an-id",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "GET",
            "/v1/tasks?state=sleeping",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/tasks?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "POST",
            "/v1/steps/01a21b7e-8efb-7081-ae3f-03e03d380a55/resolve",
            Some(r#"{"results": {}}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/v2/anything",
            None,
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            "DELETE",
            "/v1/tasks",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, error) = call(&s, method, uri, *body, None).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (*status, Some(*code)),
            "{method} {uri}: {error}"
        );
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let huge = format!(
        r#"{{"namespace": "api", "name": "chain", "context": {{"pad": "{}"}}}}"#,
        "x".repeat(70_000)
    );
    let (status, error) = call(&s, "POST", "/v1/tasks", Some(&huge), None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_and_undeclared_bodies_are_refused() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let task = r#"{"namespace": "api", "name": "chain"}"#;
    let json = ("content-type", "application/json");
    // What a foreign page can send without asking: a form, or text.
    for media in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let (status, error) = send(&s, "POST", "/v1/tasks", &[("content-type", media)], task).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            ),
            "{media}"
        );
    }
    let (status, _) = send(&s, "POST", "/v1/tasks", &[], task).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );
    let (status, _) = send(
        &s,
        "POST",
        "/v1/tasks",
        &[json, ("host", "127.0.0.1:8080")],
        task,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "same origin, JSON");
    let refused: &[&[(&str, &str)]] = &[
        // Cross-site request forgery: a page elsewhere posts to the loopback server.
        &[
            json,
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ],
        &[json, ("host", "localhost:8080"), ("origin", "null")],
        // DNS rebinding: the attacker's name resolves to 127.0.0.1.
        &[
            json,
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ],
        &[json, ("host", "evil.example:8080")],
    ];
    for headers in refused {
        let (status, error) = send(&s, "POST", "/v1/tasks", headers, task).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden_origin")),
            "{headers:?}"
        );
    }
    let own = [
        json,
        ("host", "localhost:8080"),
        ("origin", "http://localhost:8080"),
    ];
    let (status, _) = send(&s, "POST", "/v1/tasks", &own, task).await;
    assert_eq!(status, StatusCode::CREATED, "the server's own page");
    // A declared body over the limit is refused before it is read.
    let (status, error) = send(
        &s,
        "POST",
        "/v1/tasks",
        &[
            json,
            ("content-length", "10000000"),
            ("expect", "100-continue"),
        ],
        "",
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_sent_as_json_is_read_as_json() {
    let s = server(&[]).await;
    let json = ("content-type", "application/json");
    // A surrogate pair, as JSON encoders write 🚀; YAML's parser refuses it.
    let template = r#"{"namespace": "api", "name": "rocket", "version": "1.0.0",
        "steps": [{"name": "a", "handler": "echo", "config": {"label": "\ud83d\ude80"}}]}"#;
    let (status, body) = send(&s, "POST", "/v1/templates", &[json], template).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, error) = send(
        &s,
        "POST",
        "/v1/templates",
        &[json],
        "{\n  \"namespace\": }",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("request body:2:16: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_any_host_may_call_and_the_scheme_is_case_insensitive() {
    let s = server(&["s3cret"]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} s3cret");
        let headers = [
            ("authorization", auth.as_str()),
            ("host", "tasker.internal:8080"),
        ];
        let (status, _) = send(&s, "GET", "/v1/tasks", &headers, "").await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    let (status, _) = send(
        &s,
        "GET",
        "/v1/tasks",
        &[("authorization", "Basic s3cret")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_cannot_run_commands_on_the_server() {
    let s = server(&[]).await;
    let yaml = "namespace: api\nname: sneaky\nversion: 1.0.0\nsteps:\n  - name: own\n    handler: shell\n    config: {command: [/bin/sh, -c, 'id > /tmp/owned']}\n";
    let (status, error) = call(&s, "POST", "/v1/templates", Some(yaml), None).await;
    assert_eq!(
        (status, error["code"].as_str(), error["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_template"),
            Some(
                "step `own` uses the `shell` handler, which is not enabled here (handlers.shell.allow in the configuration)"
            )
        )
    );
    let (_, list) = call(&s, "GET", "/v1/templates", None, None).await;
    assert!(list["templates"].as_array().unwrap().is_empty(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_in_pages() {
    let s = server(&[]).await;
    for name in ["c", "a", "b"] {
        register(&s, &CHAIN.replace("name: chain", &format!("name: {name}"))).await;
    }
    register(&s, &CHAIN.replace("version: 1.0.0", "version: 1.1.0")).await;
    let mut seen = Vec::new();
    let mut uri = "/v1/templates?limit=2".to_owned();
    loop {
        let (status, page) = call(&s, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let templates = page["templates"].as_array().unwrap();
        assert!(templates.len() <= 2, "{page}");
        seen.extend(templates.iter().map(|t| {
            format!(
                "{}@{}",
                t["name"].as_str().unwrap(),
                t["version"].as_str().unwrap()
            )
        }));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/templates?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["a@1.0.0", "b@1.0.0", "c@1.0.0", "chain@1.1.0"]);
    let (_, other) = call(&s, "GET", "/v1/templates?namespace=other", None, None).await;
    assert_eq!(other, json!({"templates": [], "next_cursor": null}));
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=nope",
        "namespace=Bad%20Name",
        "namespace=Api",
    ] {
        let (status, error) = call(&s, "GET", &format!("/v1/templates?{bad}"), None, None).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{bad}: {error}"
        );
    }
    // Submitting without a version takes the newest of that template's versions.
    let body = r#"{"namespace": "api", "name": "chain", "context": {"start": 1}}"#;
    let (status, created) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["task_id"].as_str().unwrap();
    let (_, task) = call(&s, "GET", &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(task["version"], "1.1.0", "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_what_its_scope_allows() {
    let s = server(&["read:r", "write:w", "admin:a", "bare"]).await;
    let create = r#"{"namespace": "api", "name": "chain", "context": {"start": 1}}"#;
    let attempt = |method: &'static str, uri: &'static str, body: Option<&'static str>| {
        let s = &s;
        move |token: &'static str| async move { call(s, method, uri, body, Some(token)).await.0 }
    };
    let register_as = attempt("POST", "/v1/templates", Some(CHAIN));
    let (status, error) = call(&s, "POST", "/v1/templates", Some(CHAIN), Some("w")).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("needs `admin`"),
        "{error}"
    );
    assert_eq!(register_as("r").await, StatusCode::FORBIDDEN);
    assert_eq!(register_as("a").await, StatusCode::CREATED);
    assert_eq!(
        register_as("bare").await,
        StatusCode::OK,
        "a bare token is admin"
    );
    let submit_as = attempt("POST", "/v1/tasks", Some(create));
    assert_eq!(submit_as("r").await, StatusCode::FORBIDDEN);
    assert_eq!(submit_as("w").await, StatusCode::CREATED);
    for token in ["r", "w", "a"] {
        assert_eq!(
            attempt("GET", "/v1/tasks", None)(token).await,
            StatusCode::OK
        );
        assert_eq!(
            attempt("GET", "/v1/templates", None)(token).await,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(
        store,
        HandlerRegistry::with_builtins(),
        EngineConfig::embedded(),
    );
    let timeout = Duration::from_millis(300);
    let config = ApiConfig {
        tokens: Vec::new(),
        body_limit: 64 * 1024,
        read_timeout: timeout,
        any_host: false,
        closing: Closing::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tasker_api::serve(
        listener,
        router(engine, config),
        timeout,
        std::future::pending(),
    ));
    let answer = |request: &'static str| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        // The guard only keeps a broken server from hanging the suite.
        tokio::time::timeout(Duration::from_secs(20), c.read_to_string(&mut text))
            .await
            .expect("the server closes the connection")
            .ok();
        text
    };
    // Half a request head: the connection is closed, not held.
    let head = answer("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:").await;
    assert!(!head.contains("200 OK"), "{head}");
    // A head, then less body than declared: 408.
    let body = answer(
        "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"namespace\":",
    )
    .await;
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("request_timeout"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_newest_first_with_a_cursor() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body =
            format!(r#"{{"namespace": "api", "name": "chain", "context": {{"start": {i}}}}}"#);
        let (_, created) = call(&s, "POST", "/v1/tasks", Some(&body), None).await;
        ids.push(created["task_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_final(&s, id).await;
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=2&namespace=api&state=complete".to_owned();
    loop {
        let (status, page) = call(&s, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/tasks?limit=2&namespace=api&state=complete&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let (_, last) = call(&s, "GET", "/v1/tasks?limit=5", None, None).await;
    assert_eq!(
        last["next_cursor"],
        Value::Null,
        "no cursor when nothing follows"
    );
    let (_, none) = call(&s, "GET", "/v1/tasks?namespace=other", None, None).await;
    assert_eq!(none, json!({"tasks": [], "next_cursor": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_counted_by_state_and_filtered_by_template_and_creation() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    register(&s, FAILING).await;
    let mut ids = Vec::new();
    for body in [
        r#"{"namespace": "api", "name": "chain"}"#,
        r#"{"namespace": "api", "name": "chain"}"#,
        r#"{"namespace": "api", "name": "failing"}"#,
    ] {
        ids.push(create(&s, body).await);
    }
    for id in &ids {
        wait_final(&s, id).await;
    }
    let zeros = json!({"pending": 0, "in_progress": 0, "complete": 0, "error": 0, "cancelled": 0});
    let counts = |q: &'static str| {
        let s = &s;
        async move {
            let (status, body) = call(s, "GET", &format!("/v1/tasks/counts{q}"), None, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["counts"].clone()
        }
    };
    let mut all = zeros.clone();
    all["complete"] = json!(2);
    all["error"] = json!(1);
    assert_eq!(counts("").await, all);
    let mut chain = zeros.clone();
    chain["complete"] = json!(2);
    assert_eq!(counts("?namespace=api&name=chain").await, chain);
    assert_eq!(counts("?name=nothing").await, zeros);

    let listed = |q: &'static str| {
        let s = &s;
        async move {
            let (status, page) = call(s, "GET", &format!("/v1/tasks{q}"), None, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("?name=failing").await, [ids[2].clone()]);
    assert_eq!(
        listed("?name=chain&created_after=2000-01-01T00:00:00Z").await,
        [ids[1].clone(), ids[0].clone()]
    );
    assert!(
        listed("?created_before=2000-01-01T00:00:00%2B02:00")
            .await
            .is_empty()
    );
    let mut none = zeros.clone();
    assert_eq!(counts("?created_after=2999-01-01T00:00:00Z").await, none);
    none["complete"] = json!(2);
    assert_eq!(
        counts("?name=chain&created_after=2000-01-01T00:00:00Z").await,
        none
    );
    let (status, error) = call(&s, "GET", "/v1/tasks?created_after=yesterday", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("created_after: `yesterday` is not an RFC 3339 timestamp"),
        "{error}"
    );
    let (status, error) = call(&s, "GET", "/v1/tasks/counts?name=no%20good", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

/// The `task` events of a stream: each one's task state and its JSON.
fn task_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: task"))
        .map(|block| {
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_streams_its_changes_until_it_is_final() {
    let s = server(&[]).await;
    register(
        &s,
        "namespace: api\nname: slow\nversion: 1.0.0\nsteps:\n  - {name: a, handler: sleep, config: {ms: 600}}\n  - {name: b, handler: sleep, config: {ms: 1500}, depends_on: [a]}\n",
    )
    .await;
    let id = create(&s, r#"{"namespace": "api", "name": "slow"}"#).await;
    // The whole body: the stream ends by itself when the task completes.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        call(&s, "GET", &format!("/v1/tasks/{id}/stream"), None, None),
    )
    .await
    .expect("the stream ends when the task completes");
    assert_eq!(status, StatusCode::OK);
    let events = task_events(body.as_str().unwrap());
    let states: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap(),
                e["steps"][0]["state"].as_str().unwrap(),
                e["steps"][1]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(states.len() >= 3, "{states:?}");
    assert_eq!(
        states.last().unwrap(),
        &("complete", "complete", "complete")
    );
    assert!(
        states.contains(&("in_progress", "complete", "in_progress")),
        "b's start is seen: {states:?}"
    );
    for pair in events.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "an event is sent only when the task changed"
        );
    }
    // A finished task's stream is its view once.
    let (_, again) = call(&s, "GET", &format!("/v1/tasks/{id}/stream"), None, None).await;
    assert_eq!(
        task_events(again.as_str().unwrap()),
        [events.last().unwrap().clone()]
    );

    let unknown = "/v1/tasks/01a21b7e-8efb-7081-ae3f-03e03d380a55/stream";
    assert_eq!(
        call(&s, "GET", unknown, None, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&s, "GET", "/v1/tasks/nope/stream", None, None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_the_streams_of_unfinished_tasks() {
    use futures_util::StreamExt;
    let s = server(&[]).await;
    register(&s, APPROVAL).await;
    let id = create(&s, r#"{"namespace": "api", "name": "approval"}"#).await;
    wait_step(&s, &id, "approve", "waiting").await;
    let req = Request::get(format!("/v1/tasks/{id}/stream"))
        .body(Body::empty())
        .unwrap();
    let response = s.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: task\n"));
    // The stream waits for its next read when the shutdown comes.
    let rest = tokio::spawn(async move {
        let mut n = 0;
        while body.next().await.is_some() {
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.closing.close();
    let rest = tokio::time::timeout(Duration::from_secs(5), rest)
        .await
        .expect("the stream ends at shutdown")
        .unwrap();
    assert_eq!(rest, 0, "nothing changed before the shutdown");
}

/// A server keeps a bounded number of streams open (each reads its task until it ends);
/// past it one is refused with 503 until another closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_bounded() {
    let s = server(&[]).await;
    register(
        &s,
        "namespace: api\nname: waits\nversion: 1.0.0\nsteps:\n  - {name: a, wait_for: {signal: go, timeout: 1h}}\n",
    )
    .await;
    let id = create(&s, r#"{"namespace": "api", "name": "waits"}"#).await;
    let open = |s: &Server| {
        let req = Request::get(format!("/v1/tasks/{id}/stream"))
            .body(Body::empty())
            .unwrap();
        s.router.clone().oneshot(req)
    };
    let mut streams = Vec::new();
    for _ in 0..MAX_STREAMS {
        let response = open(&s).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open(&s).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(refused.into_body(), 4096)
        .await
        .unwrap();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], "too_many_streams", "{error}");
    // One closed (its page left): its place is free.
    streams.pop();
    assert_eq!(open(&s).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_with_a_strict_content_policy() {
    let s = server(&["read:r-secret"]).await;
    for (path, media) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/dagre.min.js", "text/javascript"),
    ] {
        // Without a token: the files hold no data; the page asks for one.
        let req = Request::get(path).body(Body::empty()).unwrap();
        let response = s.router.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], media, "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let (_, page) = call(&s, "GET", "/ui", None, None).await;
    assert!(
        page.as_str()
            .unwrap()
            .contains(r#"<script src="/ui/app.js""#)
    );
    let (status, _) = call(&s, "GET", "/v1/tasks", None, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the data still needs a token"
    );
    // Every answer, a refusal or an echo of bad input too, is only what it says it is.
    for path in ["/v1/tasks", "/v1/tasks/%3Cb%3E", "/nowhere", "/health"] {
        let req = Request::get(path)
            .header("authorization", "Bearer r-secret")
            .body(Body::empty())
            .unwrap();
        let response = s.router.clone().oneshot(req).await.unwrap();
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
}

/// Polls the task until `step` is in `state`.
async fn wait_step(s: &Server, id: &str, step: &str, state: &str) -> Value {
    for _ in 0..200 {
        let (_, task) = call(s, "GET", &format!("/v1/tasks/{id}"), None, None).await;
        let found = task["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == step);
        if found.is_some_and(|x| x["state"] == state) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("step {step} of task {id} never reached {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_completes_the_step_waiting_for_it() {
    let s = server(&["write:w-secret", "read:r-secret"]).await;
    let (status, _) = call(&s, "POST", "/v1/templates", Some(APPROVAL), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let admin = server(&[]).await;
    register(&admin, APPROVAL).await;
    let body = r#"{"namespace": "api", "name": "approval"}"#;
    let (_, created) = call(&admin, "POST", "/v1/tasks", Some(body), None).await;
    let id = created["task_id"].as_str().unwrap().to_owned();
    let task = wait_step(&admin, &id, "approve", "waiting").await;
    assert_eq!(task["steps"][1]["waits_for"], "approval");
    assert_eq!(task["steps"][1]["handler"], "");
    assert!(task["steps"][0].get("waits_for").is_none());
    let approve = task["steps"][1]["id"].clone();

    let uri = format!("/v1/tasks/{id}/signals/approval");
    let (status, error) = call(&admin, "POST", &uri, Some("{not json"), None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let bad_name = format!("/v1/tasks/{id}/signals/no%20good");
    let (status, error) = call(&admin, "POST", &bad_name, Some("{}"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, signalled) = call(&admin, "POST", &uri, Some(r#"{"by": "ana"}"#), None).await;
    assert_eq!(status, StatusCode::OK, "{signalled}");
    assert_eq!(
        signalled,
        json!({"task_id": id, "signal": "approval", "completed": [approve], "task_state": "in_progress"})
    );
    let (status, error) = call(&admin, "POST", &uri, Some("{}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already delivered"),
        "{error}"
    );
    let done = wait_final(&admin, &id).await;
    assert_eq!(done["state"], "complete");
    assert_eq!(done["steps"][1]["results"], json!({"by": "ana"}));
    let late = format!("/v1/tasks/{id}/signals/other");
    let (status, _) = call(&admin, "POST", &late, Some("{}"), None).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a finished task takes no signal"
    );
    let unknown = "/v1/tasks/01a21b7e-8efb-7081-ae3f-03e03d380a55/signals/approval";
    let (status, _) = call(&admin, "POST", unknown, Some("{}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Delivering a signal acts on a task: a read token may not.
    let (status, _) = call(&s, "POST", unknown, Some("{}"), Some("r-secret")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&s, "POST", unknown, Some("{}"), Some("w-secret")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_holds_its_steps_until_resumed() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let (status, paused) = call(&s, "POST", "/v1/queues/api/pause", None, None).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        paused,
        json!({"queue": "api", "paused": true, "changed": true})
    );
    let body = r#"{"namespace": "api", "name": "chain", "context": {"start": 1}}"#;
    let (_, created) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    let id = created["task_id"].as_str().unwrap().to_owned();
    wait_step(&s, &id, "a", "enqueued").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, task) = call(&s, "GET", &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(task["steps"][0]["state"], "enqueued", "held while paused");
    let (status, queues) = call(&s, "GET", "/v1/queues", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = call(&s, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("tasker_queue_paused{queue=\"api\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tasker_steps_waiting{reason=\"paused_queue\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(
        queues,
        json!({"queues": [{"queue": "api", "messages": 1, "paused": true}]})
    );
    let (_, resumed) = call(&s, "POST", "/v1/queues/api/resume", None, None).await;
    assert_eq!(
        resumed,
        json!({"queue": "api", "paused": false, "changed": true})
    );
    assert_eq!(wait_final(&s, &id).await["state"], "complete");
    let (status, error) = call(&s, "POST", "/v1/queues/Bad%20Name/pause", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    // A paused template's new tasks stay pending until it is resumed.
    let (status, paused) = call(&s, "POST", "/v1/templates/api/chain/pause", None, None).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        paused,
        json!({"template": "api/chain", "paused": true, "changed": true})
    );
    let (_, created) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    let held = created["task_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, task) = call(&s, "GET", &format!("/v1/tasks/{held}"), None, None).await;
    assert_eq!(
        task["state"], "pending",
        "held while its template is paused"
    );
    let (_, metrics) = call(&s, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("tasker_steps_waiting{reason=\"paused_template\"} 2\n"),
        "{metrics}"
    );
    let (status, _) = call(&s, "POST", "/v1/templates/api/chain/resume", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wait_final(&s, &held).await["state"], "complete");

    let guarded = server(&["read:r-secret"]).await;
    let (status, _) = call(
        &guarded,
        "POST",
        "/v1/queues/api/pause",
        None,
        Some("r-secret"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "pausing needs the write scope"
    );
    let (status, _) = call(&guarded, "GET", "/v1/queues", None, Some("r-secret")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_created_fires_and_is_paused_and_deleted() {
    let s = server(&[]).await;
    register(&s, CHAIN).await;
    let body = r#"{"name": "beat", "namespace": "api", "template": "chain", "cron": "@every 1s", "context": {"start": 5}}"#;
    let (status, created) = call(&s, "POST", "/v1/schedules", Some(body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (
            &created["name"],
            &created["version"],
            &created["catch_up"],
            &created["timezone"]
        ),
        (
            &json!("beat"),
            &json!("1.0.0"),
            &json!("once"),
            &json!("UTC")
        )
    );
    let (status, again) = call(&s, "POST", "/v1/schedules", Some(body), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    for (bad, says) in [
        (
            r#"{"name": "b", "namespace": "api", "template": "chain", "cron": "1 2 3"}"#,
            "has 3 fields",
        ),
        (
            r#"{"name": "b", "namespace": "api", "template": "chain", "cron": "@every 1s", "catch_up": "twice"}"#,
            "catch-up `twice`",
        ),
        (
            r#"{"name": "b", "namespace": "api", "template": "chain", "cron": "@every 1s", "context": {"start": "x"}}"#,
            "schema",
        ),
        (
            r#"{"name": "b", "namespace": "api", "template": "chain", "cron": "@every 1s", "timezone": "Moon/Base"}"#,
            "time zone",
        ),
    ] {
        let (status, error) = call(&s, "POST", "/v1/schedules", Some(bad), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(says),
            "{bad}: {error}"
        );
    }
    let taken = r#"{"namespace": "api", "name": "chain", "idempotency_key": "schedule:beat:1:2"}"#;
    let (status, error) = call(&s, "POST", "/v1/tasks", Some(taken), None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a client cannot take a tick's key: {error}"
    );
    let missing = r#"{"name": "b", "namespace": "api", "template": "nope", "cron": "@every 1s"}"#;
    let (status, _) = call(&s, "POST", "/v1/schedules", Some(missing), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The engine's orchestrator fires it: a task of the chain, with the context.
    let mut fired = Value::Null;
    for _ in 0..200 {
        let (_, list) = call(
            &s,
            "GET",
            "/v1/tasks?namespace=api&state=complete",
            None,
            None,
        )
        .await;
        if let Some(task) = list["tasks"].as_array().and_then(|t| t.first()) {
            fired = task.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = fired["task_id"]
        .as_str()
        .expect("a task of the schedule completed");
    let (_, task) = call(&s, "GET", &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(task["context"], json!({"start": 5}));
    let (_, list) = call(&s, "GET", "/v1/schedules", None, None).await;
    assert!(list["schedules"][0]["last_fire"].is_string(), "{list}");
    let (_, metrics) = call(&s, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        !metrics.contains("tasker_schedule_ticks_fired_total 0\n"),
        "{metrics}"
    );

    let (status, paused) = call(&s, "POST", "/v1/schedules/beat/pause", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        paused,
        json!({"schedule": "beat", "paused": true, "changed": true})
    );
    let (_, list) = call(&s, "GET", "/v1/schedules", None, None).await;
    assert_eq!(list["schedules"][0]["paused"], true);
    let (status, _) = call(&s, "DELETE", "/v1/schedules/beat", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&s, "DELETE", "/v1/schedules/beat", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s, "POST", "/v1/schedules/beat/resume", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(&s, "GET", "/v1/schedules", None, None).await;
    assert_eq!(list, json!({"schedules": []}));
}

const KEYED: &str = "namespace: api\nname: keyed\nversion: 1.0.0\n\
    concurrency: {key: context.account, limit: 1}\n\
    steps:\n  - {name: approve, wait_for: {signal: go, timeout: 1h}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_key_holds_a_second_task_until_the_first_ends() {
    let s = server(&[]).await;
    register(&s, KEYED).await;
    let (status, error) = call(
        &s,
        "POST",
        "/v1/tasks",
        Some(r#"{"namespace": "api", "name": "keyed", "context": {}}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("concurrency key `context.account` names nothing"),
        "{error}"
    );
    let body = r#"{"namespace": "api", "name": "keyed", "context": {"account": "acme"}}"#;
    let (_, first) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    let first = first["task_id"].as_str().unwrap().to_owned();
    wait_step(&s, &first, "approve", "waiting").await;
    let (_, second) = call(&s, "POST", "/v1/tasks", Some(body), None).await;
    let second = second["task_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, task) = call(&s, "GET", &format!("/v1/tasks/{second}"), None, None).await;
    assert_eq!(
        task["state"], "pending",
        "the first holds the key's one slot"
    );
    assert_eq!(task["concurrency_key"], "acme");
    let (_, metrics) = call(&s, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("tasker_steps_waiting{reason=\"concurrency_key\"} 1\n"),
        "{metrics}"
    );
    let signal = format!("/v1/tasks/{first}/signals/go");
    let (status, _) = call(&s, "POST", &signal, Some("{}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wait_final(&s, &first).await["state"], "complete");
    wait_step(&s, &second, "approve", "waiting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_its_start_ends_is_announced_and_counted() {
    let s = server(&[]).await;
    let mut events = s.events.subscribe();
    register(
        &s,
        "namespace: api\nname: lines\nversion: 1.0.0\nsteps:\n  - {name: line, handler: noop, for_each: context.lines}\n",
    )
    .await;
    // Not an array: the fan-out fails in the start's own transaction.
    let body = r#"{"namespace": "api", "name": "lines", "context": {"lines": "none"}}"#;
    let id = create(&s, body).await;
    assert_eq!(wait_final(&s, &id).await["state"], "error");
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.kind == EventKind::TaskFailed {
                return e;
            }
        }
    })
    .await
    .expect("the task's failure is announced");
    assert_eq!(failed.task_id.unwrap().to_string(), id);
    let (_, metrics) = call(&s, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"tasker_tasks_finished_total{state="error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_work_is_resolved_retried_and_cancelled() {
    let s = server(&[]).await;
    let mut events = s.events.subscribe();
    register(&s, FAILING).await;
    let new_task = || async {
        let (_, created) = call(
            &s,
            "POST",
            "/v1/tasks",
            Some(r#"{"namespace": "api", "name": "failing"}"#),
            None,
        )
        .await;
        created["task_id"].as_str().unwrap().to_owned()
    };
    let id = new_task().await;
    let failed = wait_final(&s, &id).await;
    assert_eq!(failed["state"], "error");
    assert!(
        failed["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("declined")
    );

    let (status, retried) = call(&s, "POST", &format!("/v1/tasks/{id}/retry"), None, None).await;
    assert_eq!(
        (status, retried["enqueued"].clone()),
        (StatusCode::OK, json!(1))
    );
    assert_eq!(
        wait_final(&s, &id).await["steps"][0]["attempts"],
        1,
        "a retry starts the attempts again"
    );

    let step = failed["steps"][0]["id"].as_str().unwrap();
    let (status, resolved) = call(
        &s,
        "POST",
        &format!("/v1/steps/{step}/resolve"),
        Some(r#"{"results": {"value": 41}}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    let done = wait_final(&s, &id).await;
    assert_eq!(done["state"], "complete");
    assert_eq!(done["steps"][1]["results"], json!({"value": 42}));

    let (status, error) = call(&s, "POST", &format!("/v1/tasks/{id}/cancel"), None, None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::CONFLICT, Some("illegal_transition"))
    );

    // The history tells the story: failed, retried, failed again, resolved, complete.
    let (status, history) = call(&s, "GET", &format!("/v1/tasks/{id}/history"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let of_task: Vec<&str> = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step_id"].is_null())
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        of_task,
        [
            "pending",
            "in_progress",
            "error",
            "in_progress",
            "error",
            "in_progress",
            "complete"
        ]
    );
    let (status, listed) = call(&s, "GET", "/v1/dead-letters", None, None).await;
    assert_eq!(
        (status, listed["dead_letters"].clone()),
        (StatusCode::OK, json!([])),
        "nothing was dead-lettered"
    );
    let (status, error) = call(&s, "GET", "/v1/dead-letters?queue=Bad%20Name", None, None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, missing) = call(
        &s,
        "GET",
        "/v1/tasks/01a21b7e-8efb-7081-ae3f-03e03d380a55/history",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, missing["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // The actions went through the engine: it published their events, and its metrics
    // count them (not the refused one).
    let mut seen = Vec::new();
    while let Some(Ok(e)) = events.try_recv() {
        if matches!(
            e.kind,
            EventKind::TaskResumed | EventKind::StepResolved | EventKind::TaskCancelled
        ) {
            seen.push((e.kind, e.step_id.map(|s| s.to_string())));
        }
    }
    assert_eq!(
        seen,
        [
            (EventKind::TaskResumed, None),
            (EventKind::StepResolved, Some(step.to_owned())),
            (EventKind::TaskResumed, None),
        ]
    );
    let (_, text) = call(&s, "GET", "/metrics", None, None).await;
    let text = text.as_str().unwrap();
    for expected in [
        "tasker_operator_actions_total{action=\"retry\"} 1\n",
        "tasker_operator_actions_total{action=\"resolve\"} 1\n",
        "tasker_operator_actions_total{action=\"cancel\"} 0\n",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_api_but_not_the_probes() {
    let s = server(&["first-token", "second-token"]).await;
    let (status, error) = call(&s, "GET", "/v1/tasks", None, None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = call(&s, "GET", "/v1/tasks", None, Some("wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in ["first-token", "second-token"] {
        let (status, _) = call(&s, "GET", "/v1/tasks", None, Some(token)).await;
        assert_eq!(status, StatusCode::OK);
    }
    for open in ["/health", "/ready", "/metrics", "/openapi.json"] {
        let (status, _) = call(&s, "GET", open, None, None).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes, "openapi.json and ROUTES disagree");

    // Every listed route is served: never the fallback's `no_route`, never 405.
    let s = server(&[]).await;
    let id = "01a21b7e-8efb-7081-ae3f-03e03d380a55";
    for (method, path) in ROUTES {
        let uri = path.replace("{id}", id);
        let (status, body) = call(&s, method, &uri, Some("{}"), None).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(body["code"], "no_route", "{method} {path}");
    }
}

/// Runs one task of the two-step chain to its end.
async fn run_chain(s: &Server) {
    register(s, CHAIN).await;
    let (_, created) = call(
        s,
        "POST",
        "/v1/tasks",
        Some(r#"{"namespace": "api", "name": "chain"}"#),
        None,
    )
    .await;
    wait_final(s, created["task_id"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_work_memory_and_queues() {
    let s = server(&[]).await;
    run_chain(&s).await;
    // The worker counts a step after the commit that the task's state shows: read
    // until the counts have caught up.
    let mut text = String::new();
    for _ in 0..100 {
        let (status, body) = call(&s, "GET", "/metrics", None, None).await;
        assert_eq!(status, StatusCode::OK);
        text = body.as_str().unwrap().to_owned();
        if text.contains("tasker_tasks_finished_total{state=\"complete\"} 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for expected in [
        "tasker_tasks_finished_total{state=\"complete\"} 1\n",
        "tasker_steps_finished_total{state=\"complete\"} 2\n",
        "tasker_step_duration_seconds_count{namespace=\"api\",handler=\"sum\"} 2\n",
        "tasker_step_dispatch_latency_seconds_count 2\n",
        "tasker_memory_paused 0\n",
        "# TYPE tasker_queue_depth gauge\n",
        "tasker_process_resident_memory_bytes ",
        "tasker_allocator_allocated_bytes ",
        "tasker_interner_entries ",
        "tasker_encode_buffer_retained_bytes ",
        "tasker_event_bus_subscribers ",
        "tasker_event_bus_dropped_events_total ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_charts_series_that_exist() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/tasker.json")).unwrap();
    let s = server(&[]).await;
    run_chain(&s).await;
    let (_, text) = call(&s, "GET", "/metrics", None, None).await;
    let exposed = text.as_str().unwrap();
    let mut charted = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if name.starts_with("tasker_") {
                    charted += 1;
                    let base = name.trim_end_matches("_bucket");
                    assert!(
                        exposed.contains(&format!("# TYPE {base} ")),
                        "the dashboard charts {name}, which /metrics does not have"
                    );
                }
            }
        }
    }
    assert!(charted >= 15, "{charted}");
}
