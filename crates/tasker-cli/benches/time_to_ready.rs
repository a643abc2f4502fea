//! Time to ready: from spawning a server process to its first `200` from `/ready`, on
//! the embedded store and on PostgreSQL (`DATABASE_URL`, a scratch database).
//!
//! Three processes are timed, interleaved, in the same run:
//! - `tasker serve`, the product;
//! - this binary as a *lean* server: the same start-up in process (one store and pool
//!   shared by the API, the orchestrator and the worker), to check the harness;
//! - this binary as a *naive* server: a store and pool per component (API, orchestrator,
//!   worker), each migrating, and eager work before listening (every example template
//!   loaded, validated and registered, the task list read).
//!
//! `cargo bench -p tasker-cli --bench time_to_ready` prints a table of medians.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasker_api::{ApiConfig, Closing};
use tasker_core::store::{Store, TaskListParams};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::postgres::PgStore;
use tasker_store::sqlite::SqliteStore;

const RUNS: usize = 15;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (variant, store) = (&args[i + 1], &args[i + 2]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(child(variant, store));
        return;
    }
    parent();
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn api() -> ApiConfig {
    ApiConfig {
        tokens: Vec::new(),
        body_limit: 1 << 20,
        read_timeout: std::time::Duration::from_secs(30),
        any_host: false,
        closing: Closing::default(),
    }
}

/// One server process: start up, listen, say where, serve until killed.
async fn child(variant: &str, store: &str) {
    match (variant, store) {
        ("lean", url) if url.starts_with("postgres") => {
            let store = PgStore::connect(url, 8).await.unwrap();
            store.migrate().await.unwrap();
            let engine = Engine::new(
                Arc::new(store),
                HandlerRegistry::with_builtins(),
                api_only(),
            );
            let _running = engine.start();
            listen(tasker_api::router(engine, api())).await
        }
        ("lean", path) => {
            let store = SqliteStore::open(path).await.unwrap();
            let engine = Engine::new(
                Arc::new(store),
                HandlerRegistry::with_builtins(),
                EngineConfig::embedded(),
            );
            let _running = engine.start();
            listen(tasker_api::router(engine, api())).await
        }
        ("naive", url) if url.starts_with("postgres") => {
            let mut stores = Vec::new();
            for _component in COMPONENTS {
                let store = PgStore::connect(url, 8).await.unwrap();
                store.migrate().await.unwrap();
                stores.push(Arc::new(store));
            }
            naive(stores).await
        }
        ("naive", path) => {
            let mut stores = Vec::new();
            for component in COMPONENTS {
                let file = format!("{path}-{component}");
                stores.push(Arc::new(SqliteStore::open(&file).await.unwrap()));
            }
            naive(stores).await
        }
        other => panic!("unknown child {other:?}"),
    }
}

/// The components a naive server gives a store each.
const COMPONENTS: [&str; 3] = ["api", "orchestrator", "worker"];

/// Eager work on the API's store, then the API on it.
async fn naive<S: Store>(stores: Vec<Arc<S>>) {
    eager_work(&*stores[0]).await;
    let engine = Engine::new(
        stores[0].clone(),
        HandlerRegistry::with_builtins(),
        api_only(),
    );
    listen(tasker_api::router(engine, api())).await
}

async fn listen(router: tasker_api::Router) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    let timeout = std::time::Duration::from_secs(30);
    tasker_api::serve(listener, router, timeout, std::future::pending())
        .await
        .unwrap();
}

fn api_only() -> EngineConfig {
    EngineConfig {
        orchestrator: false,
        worker: None,
        ..EngineConfig::embedded()
    }
}

/// What a start-up that does everything up front does before it listens.
async fn eager_work<S: Store>(store: &S) {
    let mut templates = tasker_core::template::load_path(&examples()).unwrap();
    templates.extend(tasker_core::template::load_path(&examples().join("failures")).unwrap());
    for t in &templates {
        store.template_register(t).await.unwrap();
    }
    store
        .task_list(TaskListParams {
            limit: 500,
            ..TaskListParams::default()
        })
        .await
        .unwrap();
}

/// Spawns `command`, waits for its address, then polls `/ready`; the time from spawn
/// to the first 200.
fn time_to_ready(mut command: Command) -> Duration {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(at) = line.find("http://") {
            break line[at + 7..].split_whitespace().next().unwrap().to_owned();
        }
    };
    while !ready(&addr) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn ready(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = write!(
        stream,
        "GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn parent() {
    let me = std::env::current_exe().unwrap();
    let tasker = env!("CARGO_BIN_EXE_tasker");
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![("embedded (SQLite file)".to_owned(), None)];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = runtime.block_on(tasker_store::postgres::testing::ScratchDatabase::create());
    if let Some(db) = &scratch {
        // Migrated once, as a deployment's database is.
        runtime.block_on(async {
            PgStore::connect(&db.url, 1)
                .await
                .unwrap()
                .migrate()
                .await
                .unwrap();
        });
        stores.push(("PostgreSQL".to_owned(), Some(db.url.clone())));
    }
    println!(
        "| store | `tasker serve` | lean (same start-up, this harness) | naive (pool per component, eager work) | naive / tasker |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, url) in stores {
        let (mut serve, mut lean, mut naive) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            let target = match &url {
                Some(u) => u.clone(),
                None => dir
                    .path()
                    .join(format!("run{run}.db"))
                    .display()
                    .to_string(),
            };
            let mut s = Command::new(tasker);
            s.args(["serve", "--listen", "127.0.0.1:0"])
                .env_remove("RUST_LOG");
            match &url {
                Some(u) => s.args(["--database-url", u]),
                None => s.args(["--db", &format!("{target}-serve")]),
            };
            serve.push(time_to_ready(s));
            let child = |variant: &str, target: String| {
                let mut c = Command::new(&me);
                c.args(["--child", variant, &target]);
                c
            };
            lean.push(time_to_ready(child(
                "lean",
                format!("{target}{}", if url.is_some() { "" } else { "-lean" }),
            )));
            naive.push(time_to_ready(child(
                "naive",
                format!("{target}{}", if url.is_some() { "" } else { "-naive" }),
            )));
        }
        let (serve, lean, naive) = (median(serve), median(lean), median(naive));
        println!(
            "| {name} | {} | {} | {} | {:.2} ({:.0} % less time) |",
            ms(serve),
            ms(lean),
            ms(naive),
            naive.as_secs_f64() / serve.as_secs_f64(),
            100.0 * (1.0 - serve.as_secs_f64() / naive.as_secs_f64())
        );
    }
    if scratch.is_none() {
        println!("(PostgreSQL skipped: DATABASE_URL is not reachable)");
    }
    println!("\nmedians of {RUNS} runs each, interleaved; release build");
}
