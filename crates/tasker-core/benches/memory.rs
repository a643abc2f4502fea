//! The memory program's benchmark: each hot path as Tasker does it next to a naive
//! implementation of the same operation (owned `String`s cloned per use,
//! `serde_json::Value` trees, one clone of an event per subscriber), on the reference
//! inputs, in the same run. The naive versions live here and nowhere else.
//!
//! `cargo bench -p tasker-core --features alloc-counter --bench memory` prints a table of
//! allocations, bytes and time per operation (median of batches), then runs criterion
//! on the same operations.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

mod workload;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::encode::{BufferPool, EncodeBuffer};
use tasker_core::intern::Interner;
use tasker_core::memory::{MemoryProfiler, Scope};
use workload::*;

/// The inputs as a clone-heavy implementation holds them: `Value` trees and `String`s.
struct NaiveInputs {
    task_id: String,
    step_id: String,
    names: [String; 5],
    context: Value,
    config: Value,
    parents: Vec<(String, Value)>,
}

impl NaiveInputs {
    fn of(i: &Inputs) -> Self {
        let e = &i.execution;
        Self {
            task_id: i.task_id.to_string(),
            step_id: i.step_id.to_string(),
            names: [
                e.namespace.to_string(),
                e.task_name.to_string(),
                e.task_version.to_string(),
                e.step_name.to_string(),
                e.handler.to_string(),
            ],
            context: serde_json::from_str(e.context.get()).unwrap(),
            config: serde_json::from_str(e.config.get()).unwrap(),
            parents: e
                .parents
                .iter()
                .map(|(n, r)| (n.to_string(), serde_json::from_str(r.get()).unwrap()))
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct NaiveStep {
    task_id: String,
    step_id: String,
}

#[derive(Serialize, Clone)]
struct NaiveExecution {
    task_id: String,
    step_id: String,
    attempt: u32,
    namespace: String,
    task_name: String,
    task_version: String,
    step_name: String,
    context: Value,
    config: Value,
    parents: BTreeMap<String, Value>,
}

#[derive(Clone)]
#[allow(dead_code)]
struct NaiveEvent {
    kind: String,
    task_id: String,
    step_id: String,
    step_name: String,
    attempt: u32,
    at: String,
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

mod naive {
    use super::*;

    pub fn dispatch_encode(n: &NaiveInputs) -> Vec<u8> {
        let m = NaiveStep {
            task_id: n.task_id.clone(),
            step_id: n.step_id.clone(),
        };
        serde_json::to_vec(&serde_json::to_value(&m).unwrap()).unwrap()
    }

    pub fn dispatch_decode(text: &str) -> NaiveStep {
        let v: Value = serde_json::from_str(text).unwrap();
        NaiveStep {
            task_id: s(&v, "task_id"),
            step_id: s(&v, "step_id"),
        }
    }

    pub fn execution_encode(n: &NaiveInputs) -> Vec<u8> {
        let m = NaiveExecution {
            task_id: n.task_id.clone(),
            step_id: n.step_id.clone(),
            attempt: 1,
            namespace: n.names[0].clone(),
            task_name: n.names[1].clone(),
            task_version: n.names[2].clone(),
            step_name: n.names[3].clone(),
            context: n.context.clone(),
            config: n.config.clone(),
            parents: n.parents.iter().cloned().collect(),
        };
        serde_json::to_vec(&serde_json::to_value(&m).unwrap()).unwrap()
    }

    pub fn execution_decode(text: &str) -> NaiveExecution {
        let v: Value = serde_json::from_str(text).unwrap();
        NaiveExecution {
            task_id: s(&v, "task_id"),
            step_id: s(&v, "step_id"),
            attempt: v["attempt"].as_u64().unwrap() as u32,
            namespace: s(&v, "namespace"),
            task_name: s(&v, "task_name"),
            task_version: s(&v, "task_version"),
            step_name: s(&v, "step_name"),
            context: v["context"].clone(),
            config: v["config"].clone(),
            parents: v["parents"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn publish(
        n: &NaiveInputs,
        subs: &[(
            std::sync::mpsc::Sender<NaiveEvent>,
            std::sync::mpsc::Receiver<NaiveEvent>,
        )],
    ) -> usize {
        let event = NaiveEvent {
            kind: "step.completed".into(),
            task_id: n.task_id.clone(),
            step_id: n.step_id.clone(),
            step_name: n.names[3].clone(),
            attempt: 1,
            at: "2025-08-08T12:00:03.500Z".into(),
        };
        for (tx, _) in subs {
            tx.send(event.clone()).unwrap();
        }
        subs.iter().filter(|(_, rx)| rx.try_recv().is_ok()).count()
    }
}

/// Allocations, bytes and nanoseconds per call of `op` (this thread; time is the median
/// of 15 batches).
fn measure(mut op: impl FnMut()) -> (f64, f64, f64) {
    const RUNS: u64 = 2000;
    for _ in 0..100 {
        op();
    }
    let mut p = MemoryProfiler::start(Scope::Thread);
    for _ in 0..RUNS {
        op();
    }
    let span = p.checkpoint("op").clone();
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..RUNS {
                op();
            }
            start.elapsed().as_nanos() as f64 / RUNS as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (
        span.allocations as f64 / RUNS as f64,
        span.bytes as f64 / RUNS as f64,
        times[times.len() / 2],
    )
}

struct Row {
    name: &'static str,
    reference: Option<(u32, u32)>,
    naive: (f64, f64, f64),
    ours: (f64, f64, f64),
}

fn main() {
    let i = Inputs::load();
    let n = NaiveInputs::of(&i);
    let e = Encoded::of(&i);
    let mut buf = EncodeBuffer::default();
    let mut rows = Vec::new();
    let mut row = |name, reference, naive, ours| {
        rows.push(Row {
            name,
            reference,
            naive,
            ours,
        })
    };

    row(
        "step dispatch: create + encode",
        Some((23, 2592)),
        measure(|| {
            black_box(naive::dispatch_encode(&n));
        }),
        measure(|| {
            black_box(dispatch_encode(&i, &mut buf));
        }),
    );
    row(
        "step dispatch: decode",
        Some((21, 2626)),
        measure(|| {
            black_box(naive::dispatch_decode(&e.step));
        }),
        measure(|| {
            black_box(dispatch_decode(&e.step));
        }),
    );
    row(
        "execution context: create + encode",
        Some((310, 30356)),
        measure(|| {
            black_box(naive::execution_encode(&n));
        }),
        measure(|| {
            black_box(execution_encode(&i, &mut buf));
        }),
    );
    row(
        "execution context: decode",
        Some((259, 35582)),
        measure(|| {
            black_box(naive::execution_decode(&e.execution));
        }),
        measure(|| {
            black_box(execution_decode(&e.execution));
        }),
    );
    for (subs, reference) in [
        (0, (41, 2529)),
        (1, (54, 3354)),
        (4, (93, 5829)),
        (16, (249, 15729)),
    ] {
        let names = [
            "publish event, 0 subscribers",
            "publish event, 1 subscriber",
            "publish event, 4 subscribers",
            "publish event, 16 subscribers",
        ];
        let channels: Vec<_> = (0..subs).map(|_| std::sync::mpsc::channel()).collect();
        let (bus, mut receivers) = bus_with(subs);
        row(
            names[[0, 1, 4, 16].iter().position(|&x| x == subs).unwrap()],
            Some(reference),
            measure(|| {
                black_box(naive::publish(&n, &channels));
            }),
            measure(|| {
                black_box(publish(&i, &bus, &mut receivers));
            }),
        );
    }
    let interner = Interner::new(1 << 20);
    interner.intern("fulfillment");
    row(
        "interner hit (vs String::from)",
        None,
        measure(|| {
            black_box(String::from(black_box("fulfillment")));
        }),
        measure(|| {
            black_box(interner.intern(black_box("fulfillment")));
        }),
    );
    let small = Interner::new(64);
    let mut k = 0u32;
    let keys: Vec<String> = (0..64).map(|x| format!("step_{x:02}")).collect();
    row(
        "interner miss (vs String::from)",
        None,
        measure(|| {
            black_box(String::from(black_box("fulfillment")));
        }),
        measure(|| {
            k = k.wrapping_add(1);
            black_box(small.intern(&keys[(k % 64) as usize]));
        }),
    );
    let yaml = include_str!("../../../examples/order_fulfillment.yaml");
    row(
        "template load + validate",
        None,
        measure(|| {
            black_box(naive_template(yaml));
        }),
        measure(|| {
            black_box(tasker_core::template::parse_template(yaml, "t.yaml").unwrap());
        }),
    );
    let pool = BufferPool::default();
    row(
        "encode buffer: pooled (vs fresh per use)",
        None,
        measure(|| {
            let mut b = EncodeBuffer::default();
            black_box(dispatch_encode(&i, &mut b));
        }),
        measure(|| {
            let mut b = pool.take();
            black_box(dispatch_encode(&i, &mut b));
            pool.give(b);
        }),
    );

    println!(
        "| operation | reference allocs / bytes | naive allocs / bytes / ns | Tasker allocs / bytes / ns | Tasker ÷ reference allocs | Tasker ÷ naive: allocs / ns |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let reference = r
            .reference
            .map_or("—".into(), |(a, b)| format!("{a} / {b}"));
        let vs_ref = r.reference.map_or("—".into(), |(a, _)| {
            format!("{:.1} %", 100.0 * r.ours.0 / a as f64)
        });
        let ratio = |o: f64, n: f64| {
            if n == 0.0 {
                "—".to_owned()
            } else {
                format!("{:.0} %", 100.0 * o / n)
            }
        };
        println!(
            "| {} | {} | {:.1} / {:.0} / {:.0} | {:.2} / {:.0} / {:.0} | {} | {} / {} |",
            r.name,
            reference,
            r.naive.0,
            r.naive.1,
            r.naive.2,
            r.ours.0,
            r.ours.1,
            r.ours.2,
            vs_ref,
            ratio(r.ours.0, r.naive.0),
            ratio(r.ours.2, r.naive.2)
        );
    }

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("messages");
    g.bench_function("dispatch encode/tasker", |b| {
        b.iter(|| dispatch_encode(&i, &mut buf))
    });
    g.bench_function("dispatch encode/naive", |b| {
        b.iter(|| naive::dispatch_encode(&n))
    });
    g.bench_function("execution encode/tasker", |b| {
        b.iter(|| execution_encode(&i, &mut buf))
    });
    g.bench_function("execution encode/naive", |b| {
        b.iter(|| naive::execution_encode(&n))
    });
    g.bench_function("execution decode/tasker", |b| {
        b.iter(|| execution_decode(&e.execution))
    });
    g.bench_function("execution decode/naive", |b| {
        b.iter(|| naive::execution_decode(&e.execution))
    });
    g.finish();
    let mut g = c.benchmark_group("events");
    for subs in [0, 1, 4, 16] {
        let (bus, mut receivers) = bus_with(subs);
        g.bench_function(format!("publish {subs}/tasker"), |b| {
            b.iter(|| publish(&i, &bus, &mut receivers))
        });
        let channels: Vec<_> = (0..subs).map(|_| std::sync::mpsc::channel()).collect();
        g.bench_function(format!("publish {subs}/naive"), |b| {
            b.iter(|| naive::publish(&n, &channels))
        });
    }
    g.finish();
    c.final_summary();
}

/// Template loading as a clone-heavy implementation would do it: a generic tree, names
/// copied into vectors, dependencies checked by scanning.
fn naive_template(yaml: &str) -> Vec<(String, Vec<String>)> {
    let v: Value = serde_norway::from_str(yaml).unwrap();
    let steps: Vec<(String, Vec<String>)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["depends_on"]
                    .as_array()
                    .map(|d| d.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    for (name, deps) in &steps {
        assert!(steps.iter().filter(|(n, _)| n == name).count() == 1);
        for d in deps {
            assert!(steps.iter().any(|(n, _)| n == d));
        }
    }
    steps
}
