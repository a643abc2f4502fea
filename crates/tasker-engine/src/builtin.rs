//! Built-in handlers, usable from templates without writing code.
//!
//! | name    | does |
//! |---------|------|
//! | `noop`  | returns `{}` |
//! | `echo`  | returns the step's config |
//! | `sum`   | `{"value": V}`: `config.value` (default 1) + every parent's `value` (missing = 0; a `for_each` parent's instances' `value`s), + the context's `start` (default 0) for a step with no parents, + an instance's `item` when it is a number |
//! | `flaky` | a retryable error on attempts ≤ `config.failures` (default 1; after `config.retry_after` if set), then `{"attempt": n}` |
//! | `fail`  | an error with `config.message`, permanent unless `config.retryable` is true |
//! | `sleep` | waits `config.ms`, then `{"slept_ms": ms}` |
//! | `switch` | a decision from the context: `{"next": case}`, the case of `config.cases` named by the value at `config.on` (`context.<path>`), else `config.default`; neither is a permanent error |
//! | `shell` | runs `config.command` (an argv list, no shell) with the step's [`ExecutionMessage`](tasker_core::message::ExecutionMessage), its ancestors' results included, as JSON on stdin; stdout (JSON) is the result; exit 0 = success, 75 = retryable, other = permanent |
//!
//! `shell` runs programs as the process's user, so it is registered only where the
//! process enables it with a [`ShellPolicy`] ([`HandlerRegistry::with_shell`]): a
//! template that can reach a server must not be a way to run commands on its host. The
//! child gets an empty environment plus `config.env`, runs in a process group of its
//! own, and the whole group is killed when the step times out.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Number, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tasker_core::encode::EncodeBuffer;
use tasker_core::template::TaskTemplate;

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
            .register("switch", FnHandler(switch));
        r
    }

    /// Registers the `shell` handler, running only what `policy` permits.
    pub fn with_shell(mut self, policy: ShellPolicy) -> Self {
        self.register("shell", Shell(policy.clone()));
        self.shell = Some(policy);
        self
    }

    /// Checks the template's `shell` steps against this registry: each needs the
    /// handler enabled, a `config.command` and a program the policy permits. The error
    /// names the step and the rule.
    pub fn check_template(&self, template: &TaskTemplate) -> Result<(), String> {
        for step in template.steps.iter().filter(|s| s.handler == "shell") {
            let Some(policy) = &self.shell else {
                return Err(format!(
                    "step `{}` uses the `shell` handler, which is not enabled here (handlers.shell.allow in the configuration)",
                    step.name
                ));
            };
            let command: ShellConfig = serde_json::from_value(step.config.clone())
                .map_err(|e| format!("step `{}`: shell config: {e}", step.name))?;
            policy
                .check(&command.command)
                .map_err(|why| format!("step `{}`: {why}", step.name))?;
        }
        Ok(())
    }
}

/// Which programs the `shell` handler may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellPolicy {
    /// These programs, as a step's `command[0]` names them (use absolute paths).
    Allow(Vec<String>),
    /// Any program: `tasker run --allow-shell` of a file the user trusts.
    Any,
}

impl ShellPolicy {
    fn check(&self, command: &[String]) -> Result<(), String> {
        let Some(program) = command.first() else {
            return Err("shell: config.command is an empty list".into());
        };
        match self {
            ShellPolicy::Any => Ok(()),
            ShellPolicy::Allow(allowed) if allowed.contains(program) => Ok(()),
            ShellPolicy::Allow(allowed) => Err(format!(
                "shell: `{program}` is not in handlers.shell.allow ({})",
                if allowed.is_empty() {
                    "empty".to_owned()
                } else {
                    allowed.join(", ")
                }
            )),
        }
    }
}

/// Reads a number field of a JSON object; anything else counts as missing.
fn number_field(raw: &RawValue, key: &str) -> Option<Number> {
    let map: std::collections::HashMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
    serde_json::from_str(map.get(key)?.get()).ok()
}

/// A parent's `value`; a `for_each` parent's results are its instances', whose
/// `value`s count.
fn parent_values(results: &RawValue) -> Vec<Number> {
    match serde_json::from_str::<Vec<&RawValue>>(results.get()) {
        Ok(instances) => instances
            .into_iter()
            .filter_map(|r| number_field(r, "value"))
            .collect(),
        Err(_) => number_field(results, "value").into_iter().collect(),
    }
}

fn sum(step: &StepContext) -> HandlerResult {
    let mut terms = vec![number_field(step.config(), "value").unwrap_or_else(|| Number::from(1))];
    terms.extend(step.parents().flat_map(|(_, r)| parent_values(r)));
    if step.parents().next().is_none() {
        terms.extend(number_field(step.context(), "start"));
    }
    // An instance adds its item when it is a number.
    terms.extend(
        step.item()
            .and_then(|i| serde_json::from_str::<Number>(i.get()).ok()),
    );
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

/// `switch`'s config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchConfig {
    /// Where the value is: `context.<path>`, a dotted path into the context.
    on: String,
    /// The steps to run for each value.
    cases: std::collections::BTreeMap<String, Vec<String>>,
    /// The steps to run for any other value, or none.
    #[serde(default)]
    default: Option<Vec<String>>,
}

fn switch(step: &StepContext) -> HandlerResult {
    let c: SwitchConfig = step.config_as()?;
    let path = c.on.strip_prefix("context.").ok_or_else(|| {
        HandlerError::permanent(format!(
            "switch: `on` must be `context.<path>`, not `{}`",
            c.on
        ))
    })?;
    let context: serde_json::Value = serde_json::from_str(step.context().get())
        .map_err(|e| HandlerError::permanent(format!("switch: the context: {e}")))?;
    let value = path
        .split('.')
        .try_fold(&context, |v, key| v.get(key))
        .unwrap_or(&serde_json::Value::Null);
    let case = match value {
        serde_json::Value::String(s) => c.cases.get(s),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
            c.cases.get(&value.to_string())
        }
        _ => None,
    };
    let next = case.or(c.default.as_ref()).ok_or_else(|| {
        HandlerError::permanent(format!(
            "switch: no case for {} = {value} and no default",
            c.on
        ))
    })?;
    to_result(&json!({ "next": next, "on": value }))
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

struct Shell(ShellPolicy);

#[derive(Deserialize)]
struct ShellConfig {
    command: Vec<String>,
    /// The child's whole environment.
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

/// Kills a process group when dropped before [`Group::reaped`]: the command and
/// whatever it started, when the step times out or is abandoned. Until its leader is
/// reaped, the group's id cannot be reused, so the signal reaches only this group.
struct Group(Option<u32>);

impl Group {
    /// The leader was reaped: its id may now be reused, so nothing is sent.
    fn reaped(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(leader) = self.0 {
            unsafe {
                libc::kill(-(leader as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

/// The most of a failing command's stderr kept in the step's error.
const STDERR_TAIL: usize = 2000;

impl Handler for Shell {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let c: ShellConfig = step.config_as()?;
            self.0.check(&c.command).map_err(HandlerError::permanent)?;
            let (program, args) = c.command.split_first().expect("checked: not empty");
            let mut message = step.message();
            message.ancestors = tasker_core::message::Parents(
                step.ancestors()
                    .await?
                    .iter()
                    .map(|(name, results)| (std::borrow::Cow::Borrowed(&**name), &**results))
                    .collect(),
            );
            let mut buffer = EncodeBuffer::default();
            let input = buffer.encode(&message);
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(&c.env)
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    HandlerError::permanent(format!("shell: cannot run `{program}`: {e}"))
                })?;
            let mut group = Group(child.id());
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
            group.reaped();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_core::template::parse_template;

    fn shell_step(config: &str, timeout: Duration) -> StepContext {
        crate::handler::test_step("shell", config, timeout)
    }

    fn template(command: &str) -> TaskTemplate {
        let yaml = format!(
            "namespace: ns\nname: t\nversion: 1.0.0\nsteps:\n  - {{name: first, handler: noop}}\n  - {{name: script, handler: shell, config: {{command: {command}}}}}\n"
        );
        parse_template(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn switch_without_a_case_or_a_default_says_which_value() {
        let step =
            |config: &str| crate::handler::test_step("switch", config, Duration::from_secs(1));
        let err = switch(&step(
            r#"{"on": "context.tier", "cases": {"express": ["air"]}}"#,
        ))
        .unwrap_err();
        assert_eq!(
            (err.message.as_str(), err.retryable),
            (
                "switch: no case for context.tier = null and no default",
                false
            )
        );
        let chosen = switch(&step(
            r#"{"on": "context.tier", "cases": {"express": ["air"]}, "default": ["ground"]}"#,
        ))
        .unwrap();
        assert_eq!(chosen.get(), r#"{"next":["ground"],"on":null}"#);
        let err = switch(&step(r#"{"on": "tier", "cases": {}}"#)).unwrap_err();
        assert_eq!(
            err.message,
            "switch: `on` must be `context.<path>`, not `tier`"
        );
    }

    #[test]
    fn shell_steps_need_the_handler_enabled_and_the_program_allowed() {
        let t = template("[/bin/echo, '{}']");
        assert_eq!(
            HandlerRegistry::with_builtins().check_template(&t),
            Err("step `script` uses the `shell` handler, which is not enabled here (handlers.shell.allow in the configuration)".into())
        );
        let allowed = HandlerRegistry::with_builtins()
            .with_shell(ShellPolicy::Allow(vec!["/bin/echo".into()]));
        assert_eq!(allowed.check_template(&t), Ok(()));
        assert_eq!(
            allowed.check_template(&template("[sh, -c, 'id']")),
            Err("step `script`: shell: `sh` is not in handlers.shell.allow (/bin/echo)".into())
        );
        assert_eq!(
            allowed.check_template(&template("[]")),
            Err("step `script`: shell: config.command is an empty list".into())
        );
        let any = HandlerRegistry::with_builtins().with_shell(ShellPolicy::Any);
        assert_eq!(any.check_template(&template("[sh, -c, 'id']")), Ok(()));
    }

    #[tokio::test]
    async fn a_program_outside_the_allowlist_does_not_run() {
        let shell = Shell(ShellPolicy::Allow(vec!["/bin/echo".into()]));
        let step = shell_step(
            r#"{"command": ["sh", "-c", "echo {}"]}"#,
            Duration::from_secs(5),
        );
        let err = shell.call(&step).await.unwrap_err();
        assert!(!err.retryable);
        assert_eq!(
            err.message,
            "shell: `sh` is not in handlers.shell.allow (/bin/echo)"
        );
    }

    #[tokio::test]
    async fn the_child_sees_only_the_environment_its_config_names() {
        assert!(
            std::env::var("CARGO_MANIFEST_DIR").is_ok(),
            "cargo sets it for tests"
        );
        let script = r#"printf '{"manifest":"%s","home":"%s","given":"%s"}' "$CARGO_MANIFEST_DIR" "$HOME" "$GIVEN""#;
        let config = serde_json::json!({"command": ["sh", "-c", script], "env": {"GIVEN": "yes"}});
        let step = shell_step(&config.to_string(), Duration::from_secs(5));
        let out = Shell(ShellPolicy::Any).call(&step).await.unwrap();
        assert_eq!(out.get(), r#"{"manifest":"","home":"","given":"yes"}"#);
    }

    #[tokio::test]
    async fn a_timed_out_command_takes_its_children_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let config = serde_json::json!({"command": ["sh", "-c", script]});
        let step = shell_step(&config.to_string(), Duration::from_secs(5));
        let shell = Shell(ShellPolicy::Any);
        let mut call = shell.call(&step);
        // Run until the grandchild exists, then drop the call as a timeout does.
        let pid = loop {
            tokio::select! {
                _ = &mut call => panic!("the command finished"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
        };
        assert!(alive(pid), "the grandchild runs");
        drop(call);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(pid),
            "the grandchild {pid} was killed with its group"
        );
    }

    /// Running, or stopped: not gone and not a zombie.
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
    }
}
