//! Built-in handlers, usable from templates without writing code.
//!
//! | name    | does |
//! |---------|------|
//! | `noop`  | returns `{}` |
//! | `echo`  | returns the step's config |
//! | `sum`   | `{"value": V}`: `config.value` (default 1) + every parent's `value` (missing = 0), + the context's `start` (default 0) for a step with no parents |
//! | `flaky` | a retryable error on attempts ≤ `config.failures` (default 1; after `config.retry_after` if set), then `{"attempt": n}` |
//! | `fail`  | an error with `config.message`, permanent unless `config.retryable` is true |
//! | `sleep` | waits `config.ms`, then `{"slept_ms": ms}` |
//! | `shell` | runs `config.command` (an argv list, no shell) with the step's [`ExecutionMessage`](tasker_core::message::ExecutionMessage) as JSON on stdin; stdout (JSON) is the result; exit 0 = success, 75 = retryable, other = permanent |

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Number, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tasker_core::message::EncodeBuffer;

use crate::handler::*;

/// The exit code (`EX_TEMPFAIL`) a `shell` command uses to ask for a retry.
pub const SHELL_RETRY_EXIT: i32 = 75;

impl HandlerRegistry {
    /// A registry holding the built-in handlers.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("noop", FnHandler(|_: &StepContext| to_result(&json!({}))))
            .register(
                "echo",
                FnHandler(|s: &StepContext| Ok(s.config().to_owned())),
            )
            .register("sum", FnHandler(sum))
            .register("flaky", FnHandler(flaky))
            .register("fail", FnHandler(fail))
            .register("sleep", Sleep)
            .register("shell", Shell);
        r
    }
}

/// Reads a number field of a JSON object; anything else counts as missing.
fn number_field(raw: &RawValue, key: &str) -> Option<Number> {
    let map: std::collections::HashMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
    serde_json::from_str(map.get(key)?.get()).ok()
}

fn sum(step: &StepContext) -> HandlerResult {
    let mut terms = vec![number_field(step.config(), "value").unwrap_or_else(|| Number::from(1))];
    terms.extend(step.parents().filter_map(|(_, r)| number_field(r, "value")));
    if step.parents().next().is_none() {
        terms.extend(number_field(step.context(), "start"));
    }
    // Exact while every term is an integer, a float otherwise.
    let exact = terms
        .iter()
        .try_fold(0i64, |acc, n| acc.checked_add(n.as_i64()?));
    let value = match exact {
        Some(i) => json!(i),
        None => json!(terms.iter().filter_map(Number::as_f64).sum::<f64>()),
    };
    to_result(&json!({ "value": value }))
}

#[derive(Deserialize)]
struct FlakyConfig {
    #[serde(default = "one")]
    failures: u32,
    #[serde(default, with = "tasker_core::duration::serde_human_opt")]
    retry_after: Option<Duration>,
}

fn one() -> u32 {
    1
}

fn flaky(step: &StepContext) -> HandlerResult {
    let c: FlakyConfig = step.config_as()?;
    let n = step.attempt();
    if n <= c.failures {
        let message = format!("flaky: failing attempt {n} of the first {}", c.failures);
        return Err(match c.retry_after {
            Some(d) => HandlerError::retry_after(message, d),
            None => HandlerError::retryable(message),
        });
    }
    to_result(&json!({ "attempt": n }))
}

#[derive(Deserialize)]
struct FailConfig {
    #[serde(default = "default_fail_message")]
    message: String,
    #[serde(default)]
    retryable: bool,
}

fn default_fail_message() -> String {
    "the step failed (fail handler)".into()
}

fn fail(step: &StepContext) -> HandlerResult {
    let c: FailConfig = step.config_as()?;
    Err(if c.retryable {
        HandlerError::retryable(c.message)
    } else {
        HandlerError::permanent(c.message)
    })
}

struct Sleep;

#[derive(Deserialize)]
struct SleepConfig {
    ms: u64,
}

impl Handler for Sleep {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let c: SleepConfig = step.config_as()?;
            tokio::time::sleep(Duration::from_millis(c.ms)).await;
            to_result(&json!({ "slept_ms": c.ms }))
        })
    }
}

struct Shell;

#[derive(Deserialize)]
struct ShellConfig {
    command: Vec<String>,
}

/// The most of a failing command's stderr kept in the step's error.
const STDERR_TAIL: usize = 2000;

impl Handler for Shell {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let c: ShellConfig = step.config_as()?;
            let Some((program, args)) = c.command.split_first() else {
                return Err(HandlerError::permanent(
                    "shell: config.command is an empty list",
                ));
            };
            let mut buffer = EncodeBuffer::default();
            let input = buffer.encode(&step.message());
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    HandlerError::permanent(format!("shell: cannot run `{program}`: {e}"))
                })?;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let mut stdout = child.stdout.take().expect("stdout is piped");
            let mut stderr = child.stderr.take().expect("stderr is piped");
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let write = async {
                // A command that does not read its input closes the pipe early: not an error.
                let _ = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
            };
            let (_, out_read, err_read) = tokio::join!(
                write,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            out_read
                .and(err_read)
                .map_err(|e| HandlerError::retryable(format!("shell: reading output: {e}")))?;
            let status = child.wait().await.map_err(|e| {
                HandlerError::retryable(format!("shell: waiting for `{program}`: {e}"))
            })?;
            let stderr_text = String::from_utf8_lossy(&err);
            let tail = tail(stderr_text.trim_end(), STDERR_TAIL);
            match status.code() {
                Some(0) => {
                    let text = String::from_utf8(out)
                        .map_err(|_| HandlerError::permanent("shell: stdout is not UTF-8"))?;
                    RawValue::from_string(text.trim().to_owned()).map_err(|e| {
                        HandlerError::permanent(format!("shell: stdout is not JSON: {e}"))
                    })
                }
                Some(SHELL_RETRY_EXIT) => Err(HandlerError::retryable(format!(
                    "shell: `{program}` asked for a retry (exit {SHELL_RETRY_EXIT}): {tail}"
                ))),
                Some(code) => Err(HandlerError::permanent(format!(
                    "shell: `{program}` exited with {code}: {tail}"
                ))),
                None => Err(HandlerError::retryable(format!(
                    "shell: `{program}` was killed by a signal: {tail}"
                ))),
            }
        })
    }
}

/// The last `max` bytes of `s`, on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
