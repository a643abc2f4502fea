//! Turns a parsed template into a validated one, collecting every problem.

use std::collections::{HashMap, HashSet};

use super::raw::{RawConcurrency, RawRateLimit, RawRetry, RawStep, RawTemplate, RawWait};
use super::{
    Concurrency, ContextSchema, DEFAULT_MAX_ITEMS, DEFAULT_TIMEOUT, ForEach, StepTemplate,
    TaskTemplate, TemplateError, TemplateErrors, WaitFor,
};
use crate::backoff::{Backoff, RetryPolicy};
use crate::names;
use crate::rate::RateLimit;

/// Limits on retry settings; beyond them a value is almost surely a typo.
const MAX_ATTEMPTS_LIMIT: u32 = 1000;

/// The highest rate and burst a rate limit may name.
const RATE_LIMIT: f64 = 1_000_000.0;

/// The lowest rate: a step's wait for its token stays within hours.
const MIN_RATE: f64 = 0.0001;

/// The most tasks of one concurrency key a template may let run at once.
const CONCURRENCY_LIMIT: u32 = 10_000;

/// The most instances a `for_each` step may be allowed: one task's rows stay in the
/// hundreds of thousands.
const MAX_ITEMS_LIMIT: u32 = 100_000;

struct Problems<'a> {
    file: &'a str,
    source: &'a str,
    errors: Vec<TemplateError>,
}

impl Problems<'_> {
    /// A problem with a top-level field, located at that field's key.
    fn field(&mut self, key: &str, message: String) {
        let location = locate(self.source, key, None, 0).next();
        self.errors.push(TemplateError {
            file: self.file.to_owned(),
            location,
            step: None,
            message,
        });
    }

    /// A problem in a step, located at its `name:` line (the first such step).
    fn step(&mut self, step: &str, message: String) {
        self.step_occurrence(step, 0, message);
    }

    /// A problem in the `nth` (0-based) step of that name.
    fn step_occurrence(&mut self, step: &str, nth: usize, message: String) {
        let from = self
            .source
            .lines()
            .position(|l| l.starts_with("steps:"))
            .unwrap_or(0);
        let location = locate(self.source, "name", Some(step), from).nth(nth);
        self.errors.push(TemplateError {
            file: self.file.to_owned(),
            location,
            step: Some(step.to_owned()),
            message,
        });
    }
}

/// Finds the lines, from line index `from`, holding `key:` (in block style, after
/// indentation and an optional list dash, or inside a `{...}` flow mapping) whose value,
/// if given, is `value`. Best effort: the YAML parser gives no positions for values it
/// accepted.
fn locate<'a>(
    source: &'a str,
    key: &'a str,
    value: Option<&'a str>,
    from: usize,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    source
        .lines()
        .enumerate()
        .skip(from)
        .filter_map(move |(i, line)| {
            let indent = line.len() - line.trim_start().len();
            let body = &line[indent..];
            let block = indent + if body.starts_with("- ") { 2 } else { 0 };
            let flow = line.match_indices(['{', ',']).map(|(at, _)| at + 1);
            std::iter::once(block).chain(flow).find_map(|at| {
                let rest = &line[at..];
                let start = at + (rest.len() - rest.trim_start().len());
                let after = line[start..].strip_prefix(key)?.strip_prefix(':')?;
                if let Some(v) = value {
                    let found = after.split([',', '}', '#']).next().unwrap_or("").trim();
                    if found.trim_matches(['"', '\'']) != v {
                        return None;
                    }
                }
                Some((i + 1, start + 1))
            })
        })
}

pub(super) fn validate(
    mut raw: RawTemplate,
    source: &str,
    file: &str,
) -> Result<TaskTemplate, TemplateErrors> {
    let mut p = Problems {
        file,
        source,
        errors: Vec::new(),
    };

    if let Err(why) = names::check_queue_name(&raw.namespace) {
        p.field("namespace", format!("namespace `{}` {why}", raw.namespace));
    }
    if let Err(why) = names::check_name(&raw.name) {
        p.field("name", format!("name `{}` {why}", raw.name));
    }
    if let Err(e) = semver::Version::parse(&raw.version) {
        p.field(
            "version",
            format!(
                "version `{}` is not a semantic version like 1.2.0: {e}",
                raw.version
            ),
        );
    }
    let context_schema = match raw.context_schema.take() {
        None => None,
        Some(schema) => match ContextSchema::compile(schema) {
            Ok(s) => Some(s),
            Err(e) => {
                p.field(
                    "context_schema",
                    format!("context_schema is not a valid JSON Schema: {e}"),
                );
                None
            }
        },
    };

    let template_retry = merge_retry(&RetryPolicy::default(), raw.retry.as_ref());
    if let Err(why) = check_retry(&template_retry) {
        p.field("retry", format!("retry: {why}"));
    }
    let template_timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if template_timeout.is_zero() {
        p.field("timeout", "timeout must be longer than 0ms".into());
    }

    if let Some(c) = &raw.concurrency {
        check_concurrency(&mut p, c);
    }
    if let Some(Err(why)) = raw.priority.map(check_priority) {
        p.field("priority", why);
    }
    if raw.steps.is_empty() {
        p.field("steps", "the template has no steps".into());
    }

    let known: HashSet<&str> = raw.steps.iter().map(|s| s.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (index, step) in raw.steps.iter().enumerate() {
        let name = step.name.as_str();
        if let Err(why) = names::check_name(name) {
            p.step(name, format!("step name {why}"));
        }
        if !seen.insert(name) {
            let earlier = raw
                .steps
                .iter()
                .take(index)
                .filter(|s| s.name == name)
                .count();
            let message = "duplicate step name: another step has the same name";
            p.step_occurrence(name, earlier, message.into());
        }
        match (&step.handler, &step.wait_for) {
            (Some(handler), None) => {
                if let Err(why) = names::check_handler(handler) {
                    p.step(name, format!("handler `{handler}` {why}"));
                }
            }
            (None, Some(wait)) => check_wait(&mut p, step, wait),
            (Some(_), Some(_)) => p.step(
                name,
                "has both a handler and wait_for: a step that waits for a signal runs no handler"
                    .into(),
            ),
            (None, None) => p.step(
                name,
                "has no handler (or `wait_for` to wait for a signal)".into(),
            ),
        }
        if let Some(Err(why)) = step.queue.as_deref().map(names::check_queue_name) {
            p.step(
                name,
                format!(
                    "queue `{}` {why}",
                    step.queue.as_deref().unwrap_or_default()
                ),
            );
        }
        let mut deps = HashSet::new();
        for dep in &step.depends_on {
            if dep == name {
                p.step(name, "depends on itself".into());
            } else if !known.contains(dep.as_str()) {
                p.step(name, format!("depends on unknown step `{dep}`"));
            } else if !deps.insert(dep.as_str()) {
                p.step(name, format!("lists `{dep}` twice in depends_on"));
            }
        }
        if let Some(limit) = &step.rate_limit {
            check_rate_limit(&mut p, step, limit);
        }
        match &step.for_each {
            Some(source) => check_for_each(&mut p, step, source),
            None if step.max_items.is_some() => {
                p.step(name, "`max_items` applies only to a for_each step".into())
            }
            None => {}
        }
        let mut decided = HashSet::new();
        for child in &step.decides {
            let is_child = raw
                .steps
                .iter()
                .any(|s| s.name == *child && s.depends_on.iter().any(|d| d == name));
            if !is_child {
                p.step(
                    name,
                    format!("decides `{child}`, which is not a step that depends on it"),
                );
            } else if !decided.insert(child.as_str()) {
                p.step(name, format!("lists `{child}` twice in decides"));
            }
        }
        if let Some(Err(why)) = step
            .retry
            .as_ref()
            .map(|r| check_retry(&merge_retry(&template_retry, Some(r))))
        {
            p.step(name, format!("retry: {why}"));
        }
        if step.timeout.is_some_and(|t| t.is_zero()) {
            p.step(name, "timeout must be longer than 0ms".into());
        }
    }

    if let Some(cycle) = find_cycle(&raw) {
        let path = cycle.join(" -> ");
        p.step(
            &cycle[0],
            format!("dependency cycle: {path} (each step depends on the next)"),
        );
    }

    if !p.errors.is_empty() {
        return Err(TemplateErrors(p.errors));
    }

    let namespace = raw.namespace;
    let steps = raw
        .steps
        .into_iter()
        .map(|s| {
            let wait_for = s.wait_for.map(|w| WaitFor {
                signal: w.signal,
                timeout: w.timeout.unwrap_or_default(),
            });
            StepTemplate {
                // A wait is one attempt, as long as the wait.
                retry: match &wait_for {
                    Some(_) => RetryPolicy {
                        max_attempts: 1,
                        ..RetryPolicy::default()
                    },
                    None => merge_retry(&template_retry, s.retry.as_ref()),
                },
                timeout: match &wait_for {
                    Some(w) => w.timeout,
                    None => s.timeout.unwrap_or(template_timeout),
                },
                queue: s.queue.unwrap_or_else(|| namespace.clone()),
                config: s.config.unwrap_or_else(|| serde_json::json!({})),
                name: s.name,
                handler: s.handler.unwrap_or_default(),
                depends_on: s.depends_on,
                decides: s.decides,
                wait_for,
                for_each: s.for_each.map(|source| ForEach {
                    source,
                    max_items: s.max_items.unwrap_or(DEFAULT_MAX_ITEMS),
                }),
                rate_limit: s.rate_limit.map(|r| {
                    let per_second = r.per_second.unwrap_or_default();
                    RateLimit {
                        key: r.key,
                        per_second,
                        burst: r.burst.unwrap_or((per_second.ceil() as u32).max(1)),
                    }
                }),
            }
        })
        .collect();
    Ok(TaskTemplate {
        namespace,
        name: raw.name,
        version: raw.version,
        description: raw.description,
        context_schema,
        concurrency: raw.concurrency.map(|c| Concurrency {
            key: c.key,
            limit: c.limit.unwrap_or_default(),
        }),
        priority: raw.priority.unwrap_or_default(),
        steps,
    })
}

/// A rate limit names a key, a rate above zero and a burst of at least one start; a
/// step that waits for a signal starts nothing to limit.
fn check_rate_limit(p: &mut Problems, step: &RawStep, limit: &RawRateLimit) {
    let name = step.name.as_str();
    if let Err(why) = names::check_name(&limit.key) {
        p.step(name, format!("rate_limit key `{}` {why}", limit.key));
    }
    match limit.per_second {
        None => p.step(
            name,
            "rate_limit needs per_second: how many starts a second, e.g. `per_second: 10`".into(),
        ),
        Some(r) if !(MIN_RATE..=RATE_LIMIT).contains(&r) => p.step(
            name,
            format!(
                "rate_limit per_second must be between {MIN_RATE} (one start in about 3 hours) and {RATE_LIMIT}, got {r}"
            ),
        ),
        Some(_) => {}
    }
    if let Some(b) = limit.burst
        && !(1.0..=RATE_LIMIT).contains(&f64::from(b))
    {
        p.step(
            name,
            format!("rate_limit burst must be between 1 and {RATE_LIMIT}, got {b}"),
        );
    }
    if step.wait_for.is_some() {
        p.step(
            name,
            "a step that waits for a signal starts no handler: it takes no rate_limit".into(),
        );
    }
}

/// The priorities a template or a submission may give.
pub const PRIORITIES: std::ops::RangeInclusive<i32> = -1000..=1000;

/// A priority within [`PRIORITIES`].
pub fn check_priority(priority: i32) -> Result<(), String> {
    if PRIORITIES.contains(&priority) {
        Ok(())
    } else {
        Err(format!(
            "priority must be between {} and {} (higher runs first), got {priority}",
            PRIORITIES.start(),
            PRIORITIES.end()
        ))
    }
}

/// A concurrency key is a path into the context, and its limit is set and sensible.
fn check_concurrency(p: &mut Problems, c: &RawConcurrency) {
    let mut parts = c.key.split('.');
    if parts.next() != Some("context") || c.key == "context" {
        p.field(
            "concurrency",
            format!(
                "concurrency key `{}` must be a path into the task's context, `context.<path>` (e.g. `context.customer_id`)",
                c.key
            ),
        );
    } else if parts.any(str::is_empty) {
        p.field(
            "concurrency",
            format!("concurrency key `{}`: the path has an empty key", c.key),
        );
    }
    match c.limit {
        None => p.field(
            "concurrency",
            "concurrency needs a limit: how many tasks of one key may run at once, e.g. `limit: 1`"
                .into(),
        ),
        Some(n) if n == 0 || n > CONCURRENCY_LIMIT => p.field(
            "concurrency",
            format!("concurrency limit must be between 1 and {CONCURRENCY_LIMIT}, got {n}"),
        ),
        Some(_) => {}
    }
}

/// A step that waits for a signal: a valid signal name and timeout, and none of the
/// fields that only a handler's step has.
fn check_wait(p: &mut Problems, step: &RawStep, wait: &RawWait) {
    let name = step.name.as_str();
    if let Err(why) = names::check_name(&wait.signal) {
        p.step(name, format!("wait_for signal `{}` {why}", wait.signal));
    }
    match wait.timeout {
        None => p.step(
            name,
            "wait_for needs a timeout: how long to wait for the signal, e.g. `timeout: 72h`".into(),
        ),
        Some(t) if t.is_zero() => p.step(name, "wait_for timeout must be longer than 0ms".into()),
        Some(_) => {}
    }
    let only_handlers = [
        ("queue", step.queue.is_some()),
        ("config", step.config.is_some()),
        ("retry", step.retry.is_some()),
        ("timeout", step.timeout.is_some()),
        ("decides", !step.decides.is_empty()),
    ];
    for (field, set) in only_handlers {
        if set {
            p.step(
                name,
                format!("`{field}` does not apply to a step that waits for a signal (wait_for)"),
            );
        }
    }
}

/// A `for_each` step: its source is the context or a parent's result, through a path
/// of non-empty keys, and its instances run a handler and are bounded.
fn check_for_each(p: &mut Problems, step: &RawStep, source: &str) {
    let name = step.name.as_str();
    let mut parts = source.split('.');
    let first = parts.next().unwrap_or_default();
    let empty_key = parts.any(str::is_empty);
    if first != "context" && !step.depends_on.iter().any(|d| d == first) {
        let parents = match step.depends_on.is_empty() {
            true => "it has no parents".to_owned(),
            false => format!("its parents: {}", step.depends_on.join(", ")),
        };
        p.step(
            name,
            format!(
                "for_each `{source}`: the source must be `context.<path>` or a parent's result, `<parent>.<path>` ({parents})"
            ),
        );
    } else if empty_key {
        p.step(
            name,
            format!("for_each `{source}`: the path has an empty key"),
        );
    }
    match step.max_items {
        Some(0) => p.step(name, "max_items must be at least 1".into()),
        Some(n) if n > MAX_ITEMS_LIMIT => p.step(
            name,
            format!("max_items {n} is more than the limit of {MAX_ITEMS_LIMIT}"),
        ),
        _ => {}
    }
    if step.wait_for.is_some() {
        p.step(name, "a for_each step cannot wait for a signal".into());
    }
    if !step.decides.is_empty() {
        p.step(
            name,
            "a for_each step cannot decide: let a step after it decide from its results".into(),
        );
    }
}

/// `base` with the fields that `raw` sets replaced.
fn merge_retry(base: &RetryPolicy, raw: Option<&RawRetry>) -> RetryPolicy {
    let Some(raw) = raw else {
        return base.clone();
    };
    let b = &raw.backoff;
    RetryPolicy {
        max_attempts: raw.max_attempts.unwrap_or(base.max_attempts),
        retryable: raw.retryable.unwrap_or(base.retryable),
        backoff: Backoff {
            initial: b.initial.unwrap_or(base.backoff.initial),
            max: b.max.unwrap_or(base.backoff.max),
            multiplier: b.multiplier.unwrap_or(base.backoff.multiplier),
            jitter: b.jitter.unwrap_or(base.backoff.jitter),
        },
    }
}

fn check_retry(r: &RetryPolicy) -> Result<(), String> {
    if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS_LIMIT {
        return Err(format!(
            "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT} (it counts executions; 1 = never retry), got {}",
            r.max_attempts
        ));
    }
    let b = &r.backoff;
    if !(b.multiplier.is_finite() && (1.0..=100.0).contains(&b.multiplier)) {
        return Err(format!(
            "backoff.multiplier must be between 1 and 100, got {}",
            b.multiplier
        ));
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        return Err(format!(
            "backoff.jitter must be between 0 and 1, got {}",
            b.jitter
        ));
    }
    if b.initial > b.max {
        return Err(format!(
            "backoff.initial ({}) is longer than backoff.max ({})",
            crate::duration::HumanDuration(b.initial),
            crate::duration::HumanDuration(b.max)
        ));
    }
    Ok(())
}

/// A dependency cycle as step names, first name repeated at the end.
fn find_cycle(raw: &RawTemplate) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = raw
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = raw
        .steps
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .filter(|&d| raw.steps[d].name != s.name)
                .collect()
        })
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency to visit).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::OnPath;
                        path.push((dep, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = path[from..]
                            .iter()
                            .map(|&(n, _)| raw.steps[n].name.clone())
                            .collect();
                        cycle.push(raw.steps[dep].name.clone());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}
