//! What the engine counts for `/metrics`: tasks and steps by final state, step
//! durations by namespace and handler, dispatch latency, retries, dead letters and
//! operator actions. The
//! counters belong to this process (Prometheus sums them across processes); rendering
//! is the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasker_core::{StepState, TaskState};

/// Bucket bounds in seconds, from a fast `noop` step to a five-minute one.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// A Prometheus histogram of seconds with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    counts: [AtomicU64; BUCKETS.len()],
    above: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.above.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            total += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {total}");
        }
        total += self.above.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
    }
}

const TASK_STATES: [TaskState; 3] = [TaskState::Complete, TaskState::Error, TaskState::Cancelled];

/// An operator's action on a task or a step, from any edge (CLI, API, Ruby).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OperatorAction {
    Cancel,
    Retry,
    Resolve,
    Pause,
    Resume,
}

impl OperatorAction {
    const ALL: [OperatorAction; 5] = [
        Self::Cancel,
        Self::Retry,
        Self::Resolve,
        Self::Pause,
        Self::Resume,
    ];

    /// Pausing something, or resuming it.
    pub(crate) fn pausing(paused: bool) -> Self {
        if paused { Self::Pause } else { Self::Resume }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry => "retry",
            Self::Resolve => "resolve",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}
const STEP_STATES: [StepState; 3] = [StepState::Complete, StepState::Error, StepState::Skipped];

/// (namespace, handler), as the shared names: recording copies no string.
type HandlerKey = (Arc<str>, Arc<str>);

/// The engine's counters. One per engine, shared by its loops.
#[derive(Default)]
pub struct Metrics {
    tasks_finished: [AtomicU64; TASK_STATES.len()],
    steps_finished: [AtomicU64; STEP_STATES.len()],
    retries: AtomicU64,
    dead_letters: AtomicU64,
    operator_actions: [AtomicU64; OperatorAction::ALL.len()],
    dispatch_latency: Histogram,
    step_durations: Mutex<BTreeMap<HandlerKey, Arc<Histogram>>>,
    rate_limited: AtomicU64,
    ticks_fired: AtomicU64,
    ticks_skipped: AtomicU64,
    tick_lag: Histogram,
}

impl Metrics {
    pub(crate) fn task_finished(&self, state: TaskState) {
        if let Some(i) = TASK_STATES.iter().position(|s| *s == state) {
            self.tasks_finished[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Steps that ended in `state` without a handler's attempt: skipped by an outcome,
    /// or completed or failed by a signal or its timeout.
    pub(crate) fn steps_ended(&self, state: StepState, n: usize) {
        if let Some(i) = STEP_STATES.iter().position(|s| *s == state) {
            self.steps_finished[i].fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// An attempt ended with the step in `state`, after `took`.
    pub(crate) fn step_finished(
        &self,
        namespace: &Arc<str>,
        handler: &Arc<str>,
        state: StepState,
        took: Duration,
    ) {
        match STEP_STATES.iter().position(|s| *s == state) {
            Some(i) => self.steps_finished[i].fetch_add(1, Ordering::Relaxed),
            None if state == StepState::WaitingForRetry => {
                self.retries.fetch_add(1, Ordering::Relaxed)
            }
            None => 0,
        };
        let histogram = {
            let mut all = self.step_durations.lock().expect("metrics lock");
            match all.get(&(namespace.clone(), handler.clone())) {
                Some(h) => h.clone(),
                None => all
                    .entry((namespace.clone(), handler.clone()))
                    .or_default()
                    .clone(),
            }
        };
        histogram.observe(took);
    }

    pub(crate) fn operator_acted(&self, action: OperatorAction) {
        self.operator_actions[action as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// A claim held a step back for its rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A schedule's tick created its task `lag` after its time.
    pub(crate) fn tick_fired(&self, lag: Duration) {
        self.ticks_fired.fetch_add(1, Ordering::Relaxed);
        self.tick_lag.observe(lag);
    }

    /// Missed ticks that their schedule's catch-up policy left without a task.
    pub(crate) fn ticks_skipped(&self, n: u64) {
        self.ticks_skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// From a step's message becoming available to a worker starting it.
    pub(crate) fn dispatched(&self, latency: Duration) {
        self.dispatch_latency.observe(latency);
    }

    /// Appends the engine's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP tasker_tasks_finished_total Tasks this process saw reach a final state.\n",
        );
        out.push_str("# TYPE tasker_tasks_finished_total counter\n");
        for (state, n) in TASK_STATES.iter().zip(&self.tasks_finished) {
            let _ = writeln!(
                out,
                "tasker_tasks_finished_total{{state=\"{state}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP tasker_steps_finished_total Steps this process ran to a final state, or skipped.\n",
        );
        out.push_str("# TYPE tasker_steps_finished_total counter\n");
        for (state, n) in STEP_STATES.iter().zip(&self.steps_finished) {
            let _ = writeln!(
                out,
                "tasker_steps_finished_total{{state=\"{state}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            out,
            "tasker_step_retries_total",
            "Attempts that failed and will run again.",
            &self.retries,
        );
        counter(
            out,
            "tasker_dead_letters_total",
            "Step messages moved to the dead letters.",
            &self.dead_letters,
        );
        counter(
            out,
            "tasker_steps_rate_limited_total",
            "Claims that held a step back for its rate limit (it starts when a token is free).",
            &self.rate_limited,
        );
        counter(
            out,
            "tasker_schedule_ticks_fired_total",
            "Schedule ticks this process fired, each creating its task.",
            &self.ticks_fired,
        );
        counter(
            out,
            "tasker_schedule_ticks_skipped_total",
            "Missed schedule ticks that their catch-up policy left without a task.",
            &self.ticks_skipped,
        );
        out.push_str("# HELP tasker_schedule_lag_seconds From a schedule tick's time to the creation of its task.\n");
        out.push_str("# TYPE tasker_schedule_lag_seconds histogram\n");
        self.tick_lag.render(out, "tasker_schedule_lag_seconds", "");
        out.push_str(
            "# HELP tasker_operator_actions_total Operator actions this process carried out.\n",
        );
        out.push_str("# TYPE tasker_operator_actions_total counter\n");
        for (action, n) in OperatorAction::ALL.iter().zip(&self.operator_actions) {
            let _ = writeln!(
                out,
                "tasker_operator_actions_total{{action=\"{}\"}} {}",
                action.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tasker_step_dispatch_latency_seconds From a step's message being sent to a worker starting it (first attempts).\n");
        out.push_str("# TYPE tasker_step_dispatch_latency_seconds histogram\n");
        self.dispatch_latency
            .render(out, "tasker_step_dispatch_latency_seconds", "");
        out.push_str("# HELP tasker_step_duration_seconds How long handlers ran, by namespace and handler.\n");
        out.push_str("# TYPE tasker_step_duration_seconds histogram\n");
        let all: Vec<_> = self
            .step_durations
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        for ((namespace, handler), histogram) in all {
            let labels = format!(
                "namespace=\"{}\",handler=\"{}\"",
                escape(&namespace),
                escape(&handler)
            );
            histogram.render(out, "tasker_step_duration_seconds", &labels);
        }
    }
}

/// A label value escaped for the text format.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_and_labels() {
        let m = Metrics::default();
        let ns: Arc<str> = "shop".into();
        let handler: Arc<str> = "Shop::\"Charge\"".into();
        m.step_finished(&ns, &handler, StepState::Complete, Duration::from_millis(3));
        m.step_finished(
            &ns,
            &handler,
            StepState::WaitingForRetry,
            Duration::from_secs(400),
        );
        m.task_finished(TaskState::Complete);
        m.dispatched(Duration::from_micros(500));
        m.tick_fired(Duration::from_millis(20));
        m.ticks_skipped(3);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("tasker_tasks_finished_total{state=\"complete\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("tasker_steps_finished_total{state=\"complete\"} 1\n"));
        assert!(out.contains("tasker_step_retries_total 1\n"));
        let labels = "namespace=\"shop\",handler=\"Shop::\\\"Charge\\\"\"";
        assert!(out.contains(&format!(
            "tasker_step_duration_seconds_bucket{{{labels},le=\"0.0025\"}} 0\n"
        )));
        assert!(out.contains(&format!(
            "tasker_step_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "tasker_step_duration_seconds_bucket{{{labels},le=\"300\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "tasker_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "tasker_step_duration_seconds_count{{{labels}}} 2\n"
        )));
        assert!(out.contains("tasker_step_dispatch_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("tasker_step_dispatch_latency_seconds_sum 0.0005\n"));
        assert!(out.contains("tasker_schedule_ticks_fired_total 1\n"));
        assert!(out.contains("tasker_schedule_ticks_skipped_total 3\n"));
        assert!(out.contains("tasker_schedule_lag_seconds_bucket{le=\"0.025\"} 1\n"));
    }
}
