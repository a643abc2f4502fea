//! What every Tasker process can serve to its operators: `/health` (the process is
//! up), `/ready` (its store answers) and `/metrics` (Prometheus).

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tasker_core::encode::EncodeBuffer;
use tasker_core::intern::Interner;
use tasker_core::store::{QueueDepth, Store};
use tasker_engine::Engine;
use tasker_engine::metrics::escape;
use tasker_engine::process_memory::{heap_stats, resident_bytes};

use crate::error::ApiError;
use crate::{AppState, json};

pub async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

pub async fn ready<S: Store>(State(state): State<AppState<S>>) -> Result<Response, ApiError> {
    match state.engine.store().ping().await {
        Ok(()) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store does not answer: {e}"),
        )),
    }
}

pub async fn metrics<S: Store>(State(state): State<AppState<S>>) -> Response {
    let text = render(&state.engine).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Every series of this process in the Prometheus text format.
pub async fn render<S: Store>(engine: &Engine<S>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    engine.metrics().render(&mut out);
    let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    let counter = |out: &mut String, name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    let mut waiting = Vec::new();
    match engine.store().queue_depths().await {
        Ok(depths) => {
            out.push_str("# HELP tasker_queue_depth Messages waiting or in flight, by queue.\n");
            out.push_str("# TYPE tasker_queue_depth gauge\n");
            for d in &depths {
                let _ = writeln!(
                    out,
                    "tasker_queue_depth{{queue=\"{}\"}} {}",
                    escape(&d.queue),
                    d.messages
                );
            }
            match engine.paused_queues().await {
                Ok(paused) => {
                    waiting.push(("paused_queue", paused_queues(&mut out, &depths, &paused)))
                }
                Err(e) => tracing::warn!(error = %e, "cannot read paused queues for /metrics"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue depths for /metrics"),
    }
    match engine.store().tasks_held().await {
        Ok(held) => {
            waiting.push(("paused_template", held.paused_template));
            waiting.push(("concurrency_key", held.concurrency_key));
            waiting.push(("rate_limit", held.rate_limit));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read held tasks for /metrics"),
    }
    out.push_str("# HELP tasker_steps_waiting Steps held back, by why.\n");
    out.push_str("# TYPE tasker_steps_waiting gauge\n");
    for (reason, steps) in waiting {
        let _ = writeln!(out, "tasker_steps_waiting{{reason=\"{reason}\"}} {steps}");
    }
    if let Some(rss) = resident_bytes() {
        gauge(
            &mut out,
            "tasker_process_resident_memory_bytes",
            "Resident set size of this process.",
            rss as f64,
        );
    }
    gauge(
        &mut out,
        "tasker_memory_paused",
        "1 while memory above the high watermark holds new work back.",
        if engine.is_paused() { 1.0 } else { 0.0 },
    );
    if let Some(heap) = heap_stats() {
        gauge(
            &mut out,
            "tasker_allocator_allocated_bytes",
            "Heap bytes in use (glibc malloc).",
            heap.allocated as f64,
        );
        gauge(
            &mut out,
            "tasker_allocator_free_bytes",
            "Heap bytes held free by the allocator (glibc malloc).",
            heap.free as f64,
        );
        gauge(
            &mut out,
            "tasker_allocator_mapped_bytes",
            "Bytes in large allocations mapped directly (glibc malloc).",
            heap.mapped as f64,
        );
    }
    let interner = Interner::global().stats();
    gauge(
        &mut out,
        "tasker_interner_entries",
        "Distinct names interned.",
        interner.entries as f64,
    );
    gauge(
        &mut out,
        "tasker_interner_bytes",
        "Bytes of the interned names.",
        interner.bytes as f64,
    );
    counter(
        &mut out,
        "tasker_interner_hits_total",
        "Interner lookups that found the name.",
        interner.hits as f64,
    );
    counter(
        &mut out,
        "tasker_interner_misses_total",
        "Interner lookups that added the name.",
        interner.misses as f64,
    );
    counter(
        &mut out,
        "tasker_interner_evictions_total",
        "Names evicted to keep the interner in its budget.",
        interner.evictions as f64,
    );
    gauge(
        &mut out,
        "tasker_encode_buffer_retained_bytes",
        "Bytes kept by the reusable message encode buffers.",
        EncodeBuffer::retained_bytes() as f64,
    );
    gauge(
        &mut out,
        "tasker_event_bus_subscribers",
        "Subscribers of the event bus.",
        engine.events().subscriber_count() as f64,
    );
    counter(
        &mut out,
        "tasker_event_bus_dropped_events_total",
        "Events slow subscribers missed (they lagged).",
        engine.events().dropped_events() as f64,
    );
    out
}

/// Which queues are paused; returns the steps their pause holds back.
fn paused_queues(out: &mut String, depths: &[QueueDepth], paused: &[String]) -> u64 {
    out.push_str("# HELP tasker_queue_paused 1 for a paused queue: it delivers nothing new.\n");
    out.push_str("# TYPE tasker_queue_paused gauge\n");
    for queue in paused {
        let _ = writeln!(out, "tasker_queue_paused{{queue=\"{}\"}} 1", escape(queue));
    }
    depths
        .iter()
        .filter(|d| paused.contains(&d.queue))
        .map(|d| d.messages)
        .sum()
}
