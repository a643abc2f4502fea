//! `tasker bench`: the throughput harness. Runs N tasks of one shape with `noop`
//! handlers on either store and reports steps/s, dispatch latency (a parent's
//! completion to its child's start), task latency, database transactions per step and
//! the peak RSS of each process — and, on PostgreSQL, the ceiling of the queue itself
//! (raw pgmq send → read → delete) measured in the same run.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tasker_core::id::TaskId;
use tasker_core::store::Store;
use tasker_core::template::{TaskTemplate, parse_template};
use tasker_engine::process_memory::peak_resident_kib;
use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Queues, WorkerConfig};
use tasker_store::postgres::ceiling;

use crate::backend::{Access, Backend, migrate_postgres, open_sqlite};
use crate::cli::BenchArgs;
use crate::{CliError, Outcome};

/// What the harness runs: a template, the context of each task, and how many steps a
/// task has in all (the instances of a `for_each` step included).
pub struct Shape {
    pub template: TaskTemplate,
    pub context: String,
    pub steps: usize,
}

/// The workflow shapes the harness knows; `chain`, `fanout` and `foreach` (a fan-out
/// over the context's items: the `fanout` of `for_each` instances) take their size from
/// `steps`, and the others have theirs.
pub fn shape(args: &BenchArgs) -> Result<Shape, CliError> {
    let (shape, steps) = (args.shape.as_str(), args.steps);
    let sized = matches!(shape, "chain" | "fanout" | "foreach");
    let n = match (sized, steps) {
        (true, Some(n)) if n >= 3 => n,
        (true, _) => {
            return Err(CliError::BadInput(format!(
                "--shape {shape} needs --steps N, at least 3"
            )));
        }
        (false, Some(_)) => {
            return Err(CliError::BadInput(format!(
                "--steps is for --shape chain, fanout or foreach; {shape} has a fixed size"
            )));
        }
        (false, None) => 0,
    };
    let name = if sized {
        format!("{shape}{n}")
    } else {
        shape.to_owned()
    };
    let mut yaml = format!("namespace: bench\nname: {name}\nversion: 1.0.0\n");
    let mut context = "{}".to_owned();
    if let Some(limit) = args.key_limit {
        yaml.push_str(&format!(
            "concurrency: {{key: context.key, limit: {limit}}}\n"
        ));
        context = r#"{"key": "bench"}"#.to_owned();
    }
    yaml.push_str("steps:\n");
    let rate = match args.rate_limit {
        Some(r) => format!(
            ", rate_limit: {{key: bench, per_second: {r}, burst: {}}}",
            r.ceil().max(1.0)
        ),
        None => String::new(),
    };
    let mut step = |name: &str, deps: &[String]| {
        yaml.push_str(&format!(
            "  - {{name: {name}, handler: noop, depends_on: [{}]{rate}}}\n",
            deps.join(", ")
        ));
    };
    let chain = |n: usize, step: &mut dyn FnMut(&str, &[String])| {
        for i in 0..n {
            let deps: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            step(&format!("s{i}"), &deps);
        }
    };
    let fanout = |n: usize, step: &mut dyn FnMut(&str, &[String])| {
        step("root", &[]);
        let leaves: Vec<String> = (0..n).map(|i| format!("leaf{i}")).collect();
        for leaf in &leaves {
            step(leaf, &["root".into()]);
        }
        step("join", &leaves);
    };
    match shape {
        "linear4" => chain(4, &mut step),
        "chain50" => chain(50, &mut step),
        "chain" => chain(n, &mut step),
        "fanout" => fanout(n - 2, &mut step),
        "diamond" => {
            step("a", &[]);
            step("b", &["a".into()]);
            step("c", &["a".into()]);
            step("d", &["b".into(), "c".into()]);
        }
        "fanout100" => fanout(100, &mut step),
        "foreach" => {
            let items = n - 2;
            yaml.push_str(&format!(
                "  - {{name: each, handler: noop, for_each: context.items, max_items: {items}{rate}}}\n  \
                 - {{name: join, handler: noop, depends_on: [each]}}\n"
            ));
            context =
                serde_json::json!({ "items": (0..items).collect::<Vec<_>>(), "key": "bench" })
                    .to_string();
        }
        other => {
            return Err(CliError::BadInput(format!(
                "unknown shape `{other}`: use linear4, diamond, fanout100, chain50, chain, fanout or foreach"
            )));
        }
    }
    let template = parse_template(&yaml, &name).map_err(CliError::failed)?;
    let steps = if shape == "foreach" {
        n
    } else {
        template.steps.len()
    };
    Ok(Shape {
        template,
        context,
        steps,
    })
}

/// Fills the database with `steps` finished steps (whole tasks of `template`).
async fn preload<'a, F, Fut>(
    steps: u64,
    template: &'a TaskTemplate,
    fill: F,
) -> Result<(), CliError>
where
    F: FnOnce(&'a TaskTemplate, u64) -> Fut,
    Fut: std::future::Future<Output = tasker_core::store::StoreResult<u64>>,
{
    if steps == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let tasks = steps.div_ceil(template.steps.len() as u64);
    let done = fill(template, tasks).await.map_err(CliError::failed)?;
    eprintln!(
        "preloaded {done} finished steps ({tasks} tasks) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Nearest-rank percentiles of a list of durations, in milliseconds.
#[derive(Serialize, Default)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub count: usize,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1000.0
    };
    Percentiles {
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        count: samples.len(),
    }
}

#[derive(Serialize)]
struct ProcessRss {
    role: String,
    pid: u32,
    peak_rss_kib: Option<u64>,
}

#[derive(Serialize)]
struct Ceiling {
    messages: usize,
    one_at_a_time_per_s: f64,
    batched_100_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    store: &'static str,
    shape: String,
    tasks: usize,
    steps: usize,
    workers: usize,
    concurrency: usize,
    seconds: f64,
    steps_per_s: f64,
    /// While every task is in flight at once: queueing included.
    dispatch_latency: Percentiles,
    task_latency: Percentiles,
    /// One task at a time: the engine's own overhead.
    idle_dispatch_latency: Percentiles,
    idle_task_latency: Percentiles,
    /// Tasks of the one-at-a-time phase.
    idle_tasks: usize,
    /// Finished steps in the database before the run.
    preloaded_steps: u64,
    transactions_per_step: f64,
    transactions_counted: &'static str,
    processes: Vec<ProcessRss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pgmq_ceiling: Option<Ceiling>,
    /// With the `alloc-counter` feature, on the embedded store: every thread counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations_per_step: Option<f64>,
}

/// Dispatch latencies (every step with parents) and task latencies, from the
/// transitions table.
async fn latencies<S: Store>(
    store: &S,
    tasks: &[TaskId],
) -> Result<(Vec<Duration>, Vec<Duration>), CliError> {
    let mut dispatch = Vec::new();
    let mut task_latency = Vec::new();
    for &id in tasks {
        let detail = store.task_get(id).await.map_err(CliError::failed)?;
        let trail = store.transition_list(id).await.map_err(CliError::failed)?;
        let mut started = HashMap::new();
        let mut completed = HashMap::new();
        for t in &trail {
            match (t.step_id, t.to_state.as_str()) {
                (Some(s), "in_progress") => {
                    started.entry(s).or_insert(t.at);
                }
                (Some(s), "complete") => {
                    completed.insert(s, t.at);
                }
                _ => {}
            }
        }
        let by_name: HashMap<&str, _> = detail
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.id))
            .collect();
        for s in &detail.steps {
            let parents_done = s
                .depends_on
                .iter()
                .filter_map(|p| completed.get(&by_name[p.as_str()]))
                .max();
            if let (Some(done), Some(start)) = (parents_done, started.get(&s.id)) {
                dispatch.push(start.since(*done));
            }
        }
        let created = trail.iter().find(|t| t.step_id.is_none()).map(|t| t.at);
        let finished = trail
            .iter()
            .rev()
            .find(|t| t.step_id.is_none() && t.to_state == "complete")
            .map(|t| t.at);
        if let (Some(a), Some(b)) = (created, finished) {
            task_latency.push(b.since(a));
        }
    }
    Ok((dispatch, task_latency))
}

/// Submits `n` tasks from `SUBMITTERS` concurrent clients, as an application would.
async fn submit_all<S: Store>(
    engine: &Engine<S>,
    shape: &Shape,
    n: usize,
) -> Result<Vec<TaskId>, CliError> {
    const SUBMITTERS: usize = 4;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..SUBMITTERS {
        let (engine, template) = (engine.clone(), shape.template.clone());
        let context = shape.context.clone();
        let count = n / SUBMITTERS + usize::from(c < n % SUBMITTERS);
        clients.spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(
                    engine
                        .submit(&template, &context, None)
                        .await
                        .map_err(CliError::failed)?
                        .task_id,
                );
            }
            Ok::<_, CliError>(ids)
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(joined) = clients.join_next().await {
        ids.extend(joined.map_err(CliError::failed)??);
    }
    Ok(ids)
}

/// Tasks run one after another, each waited for: dispatch latency without queueing.
/// An engine with workers in this process is waited on through its events; otherwise
/// the store is polled.
async fn one_at_a_time<S: Store>(
    engine: &Engine<S>,
    in_process: bool,
    shape: &Shape,
    n: usize,
) -> Result<Vec<TaskId>, CliError> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = engine
            .submit(&shape.template, &shape.context, None)
            .await
            .map_err(CliError::failed)?
            .task_id;
        if in_process {
            engine.wait(id, |_| {}).await.map_err(CliError::failed)?;
        } else {
            while !engine
                .store()
                .task_get(id)
                .await
                .map_err(CliError::failed)?
                .task
                .state
                .is_final()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Waits until every task of `tasks` is final, reading one task row at a time in
/// submission order (the order they mostly finish in): the harness adds almost no load
/// to the database it measures.
async fn until_finished<S: Store>(
    store: &S,
    tasks: &[TaskId],
    poll: Duration,
) -> Result<(), CliError> {
    for &id in tasks {
        while !store
            .task_progress(id)
            .await
            .map_err(CliError::failed)?
            .state
            .is_final()
        {
            tokio::time::sleep(poll).await;
        }
    }
    Ok(())
}

fn no_roles() -> EngineConfig {
    EngineConfig {
        orchestrator: false,
        worker: None,
        ..EngineConfig::embedded()
    }
}

/// How many tasks the unloaded latency phase runs, one after another: 20, or fewer
/// of a large shape (about 2,000 steps in all, at least one task).
fn idle_tasks(shape: &Shape) -> usize {
    (2000 / shape.steps).clamp(1, 20)
}

/// What one run measured, before it becomes a report.
struct Run {
    seconds: f64,
    loaded: Vec<TaskId>,
    idle: Vec<TaskId>,
}

/// The throughput phase (all tasks submitted at once) and the latency phase (one task at
/// a time), against workers that are already running.
async fn measure<S: Store>(
    engine: &Engine<S>,
    in_process: bool,
    args: &BenchArgs,
    shape: &Shape,
) -> Result<Run, CliError> {
    let started = Instant::now();
    let loaded = submit_all(engine, shape, args.tasks).await?;
    until_finished(&**engine.store(), &loaded, Duration::from_millis(5)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let idle = one_at_a_time(engine, in_process, shape, idle_tasks(shape)).await?;
    Ok(Run {
        seconds,
        loaded,
        idle,
    })
}

pub async fn bench(args: BenchArgs) -> Result<Outcome, CliError> {
    let shape = shape(&args)?;
    let template = &shape.template;
    let report = match Backend::from_args(&args.store)? {
        Backend::Sqlite(path) => {
            let store = Arc::new(open_sqlite(&path, Access::Write).await?);
            preload(args.preload_steps, template, |t, n| {
                store.preload_finished(t, n)
            })
            .await?;
            let config = EngineConfig {
                worker: Some(WorkerConfig {
                    queues: Queues::All,
                    concurrency: args.concurrency,
                }),
                ..EngineConfig::embedded()
            };
            let engine = Engine::new(store.clone(), HandlerRegistry::with_builtins(), config);
            let running = engine.start();
            let writes_before = store.write_transactions();
            #[cfg(feature = "alloc-counter")]
            let mut profiler =
                tasker_core::memory::MemoryProfiler::start(tasker_core::memory::Scope::Process);
            let run = measure(&engine, true, &args, &shape).await?;
            #[cfg(feature = "alloc-counter")]
            let allocations = Some(profiler.checkpoint("bench").allocations as f64);
            #[cfg(not(feature = "alloc-counter"))]
            let allocations: Option<f64> = None;
            running.shutdown().await;
            let writes = store.write_transactions() - writes_before;
            let processes = vec![ProcessRss {
                role: "embedded".into(),
                pid: std::process::id(),
                peak_rss_kib: peak_resident_kib(std::process::id()),
            }];
            let counted = "write transactions of the engine (queue reads included), both phases";
            let steps = (args.tasks + run.idle.len()) * shape.steps;
            let mut report = report(
                &*store,
                "sqlite",
                &args,
                &shape,
                run,
                (writes as f64, counted),
                processes,
                None,
            )
            .await?;
            report.allocations_per_step = allocations.map(|a| a / steps as f64);
            report
        }
        Backend::Postgres(url) => bench_postgres(&args, &url, &shape).await?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        print_report(&report);
    }
    Ok(Outcome::Success)
}

/// Turns a run into a report: latencies from the transitions table, rates per step.
#[allow(clippy::too_many_arguments)]
async fn report<S: Store>(
    store: &S,
    name: &'static str,
    args: &BenchArgs,
    shape: &Shape,
    run: Run,
    (transactions, counted): (f64, &'static str),
    processes: Vec<ProcessRss>,
    pgmq_ceiling: Option<Ceiling>,
) -> Result<Report, CliError> {
    let steps = shape.steps * args.tasks;
    let all_steps = shape.steps * (args.tasks + run.idle.len());
    let (dispatch, task_latency) = latencies(store, &run.loaded).await?;
    let (idle_dispatch, idle_task_latency) = latencies(store, &run.idle).await?;
    Ok(Report {
        store: name,
        shape: args.shape.clone(),
        tasks: args.tasks,
        steps,
        workers: if name == "sqlite" { 1 } else { args.workers },
        concurrency: args.concurrency,
        seconds: run.seconds,
        steps_per_s: steps as f64 / run.seconds,
        dispatch_latency: percentiles(dispatch),
        task_latency: percentiles(task_latency),
        idle_dispatch_latency: percentiles(idle_dispatch),
        idle_task_latency: percentiles(idle_task_latency),
        idle_tasks: run.idle.len(),
        preloaded_steps: args.preload_steps,
        transactions_per_step: transactions / all_steps as f64,
        transactions_counted: counted,
        processes,
        pgmq_ceiling,
        allocations_per_step: None,
    })
}

/// A process of the harness, killed if the harness stops early.
struct Spawned {
    role: String,
    child: Child,
}

impl Spawned {
    /// Stops the process with SIGTERM; returns the write transactions it reported.
    fn stop(&mut self) -> Result<u64, CliError> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).map_err(CliError::failed)?;
        }
        let _ = self.child.wait();
        stderr
            .lines()
            .find_map(|l| {
                l.split(" stopped after ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "the {} did not report its transactions: {stderr}",
                    self.role
                ))
            })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench_postgres(args: &BenchArgs, url: &str, shape: &Shape) -> Result<Report, CliError> {
    // A benchmark runs on a scratch database: it may set the schema up itself.
    let store = Arc::new(migrate_postgres(url, 4).await?);
    preload(args.preload_steps, &shape.template, |t, n| {
        store.preload_finished(t, n)
    })
    .await?;
    let exe = std::env::current_exe().map_err(CliError::failed)?;
    let spawn = |role: &str, extra: &[String]| -> Result<Spawned, CliError> {
        let child = Command::new(&exe)
            .arg(role)
            .args(extra)
            .env("DATABASE_URL", url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::Failed(format!("cannot start a {role}: {e}")))?;
        Ok(Spawned {
            role: role.to_owned(),
            child,
        })
    };
    let mut procs = vec![spawn("orchestrator", &[])?];
    for _ in 0..args.workers {
        let extra = [
            "--queue".to_owned(),
            "bench".to_owned(),
            "--concurrency".to_owned(),
            args.concurrency.to_string(),
        ];
        procs.push(spawn("worker", &extra)?);
    }
    // Let them connect and listen before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let engine = Engine::new(store.clone(), HandlerRegistry::new(), no_roles());
    let run = measure(&engine, false, args, shape).await?;

    let mut processes: Vec<ProcessRss> = procs
        .iter()
        .map(|p| ProcessRss {
            role: p.role.clone(),
            pid: p.child.id(),
            peak_rss_kib: peak_resident_kib(p.child.id()),
        })
        .collect();
    let mut tx = store.write_transactions();
    for p in &mut procs {
        tx += p.stop()?;
    }
    processes.push(ProcessRss {
        role: "harness".into(),
        pid: std::process::id(),
        peak_rss_kib: peak_resident_kib(std::process::id()),
    });

    let messages = args.ceiling_messages;
    let one = ceiling::pgmq_round_trips(store.pool(), messages.min(2000), 1)
        .await
        .map_err(CliError::failed)?;
    let batched = ceiling::pgmq_round_trips(store.pool(), messages, 100)
        .await
        .map_err(CliError::failed)?;
    let ceiling = Ceiling {
        messages,
        one_at_a_time_per_s: messages.min(2000) as f64 / one.as_secs_f64(),
        batched_100_per_s: messages as f64 / batched.as_secs_f64(),
    };
    let counted = "write transactions of every process (queue reads included), both phases";
    report(
        &*store,
        "postgres",
        args,
        shape,
        run,
        (tx as f64, counted),
        processes,
        Some(ceiling),
    )
    .await
}

fn print_report(r: &Report) {
    println!(
        "{} · {} × {} ({} steps) · {} worker process(es) × concurrency {}",
        r.store, r.tasks, r.shape, r.steps, r.workers, r.concurrency
    );
    println!(
        "  throughput        {:>10.0} steps/s  ({:.2} s)",
        r.steps_per_s, r.seconds
    );
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms",
            x.p50_ms, x.p95_ms, x.p99_ms
        )
    };
    println!("  under load, all {} tasks in flight:", r.tasks);
    println!("    dispatch latency  {}", p(&r.dispatch_latency));
    println!("    task latency      {}", p(&r.task_latency));
    println!("  one task at a time ({} tasks):", r.idle_tasks);
    println!("    dispatch latency  {}", p(&r.idle_dispatch_latency));
    println!("    task latency      {}", p(&r.idle_task_latency));
    println!(
        "  transactions      {:>10.2} per step ({})",
        r.transactions_per_step, r.transactions_counted
    );
    for proc in &r.processes {
        let rss = proc
            .peak_rss_kib
            .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "  peak RSS          {:>10}  {} (pid {})",
            rss, proc.role, proc.pid
        );
    }
    if let Some(a) = r.allocations_per_step {
        println!("  allocations       {a:>10.0} per step (every thread)");
    }
    if let Some(c) = &r.pgmq_ceiling {
        println!(
            "  pgmq ceiling      {:>10.0} msg/s one at a time, {:.0} msg/s batched by 100 (send → read → delete)",
            c.one_at_a_time_per_s, c.batched_100_per_s
        );
        println!(
            "  engine / batched ceiling: {:.1} %",
            100.0 * r.steps_per_s / c.batched_100_per_s
        );
    }
}
