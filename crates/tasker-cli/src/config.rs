//! The configuration of the long-running processes (`serve`, `orchestrator`, `worker`):
//! one TOML file (`--config`, or `TASKER_CONFIG`) with environment overrides
//! (`TASKER_<SECTION>_<KEY>`), then command-line flags over both. Every key, its default
//! and its meaning: docs/configuration.md.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tasker_core::duration::{parse_duration, serde_human};

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: Database,
    pub engine: EngineSection,
    pub worker: WorkerSection,
    pub api: Api,
    pub metrics: Metrics,
    pub memory: Memory,
    pub log: Log,
    pub otel: Otel,
    pub handlers: Handlers,
}

/// Traces (docs/traces.md): exported over OTLP/HTTP when `endpoint` is set, off when not.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Otel {
    /// The collector's OTLP/HTTP base URL (`http://localhost:4318`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The `service.name` of this process's spans; `tasker-<command>` if unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Handlers {
    pub shell: Shell,
}

/// The built-in `shell` handler runs programs as this process's user: off unless
/// `allow` lists the programs it may run.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shell {
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `postgres://…` or `sqlite:PATH`; `--database-url`, `--db` and `DATABASE_URL` win.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Connections of this process's one pool (PostgreSQL); derived from the role if unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    #[serde(with = "serde_human")]
    pub poll_interval: Duration,
    #[serde(with = "serde_human")]
    pub visibility_grace: Duration,
    /// Orchestrators delete tasks finished longer ago than this; none keeps them all.
    #[serde(with = "serde_human_option", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            visibility_grace: Duration::from_secs(5),
            retention: None,
        }
    }
}

/// An optional human duration (`30d`).
mod serde_human_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};
    use tasker_core::duration::{HumanDuration, parse_duration};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&HumanDuration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Empty: every queue.
    pub queues: Vec<String>,
    pub concurrency: usize,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: 8,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub listen: String,
    #[serde(serialize_with = "redacted")]
    pub tokens: Vec<String>,
    pub body_limit: ByteSize,
    #[serde(with = "serde_human")]
    pub read_timeout: Duration,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tokens: Vec::new(),
            body_limit: ByteSize(1024 * 1024),
            read_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Where orchestrator and worker processes serve `/metrics`, `/health`, `/ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_watermark: Option<ByteSize>,
    #[serde(with = "serde_human")]
    pub sample_interval: Duration,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            high_watermark: None,
            low_watermark: None,
            sample_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not a log format (pretty or json)")),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A `RUST_LOG` filter; `RUST_LOG` itself wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "warn".into(),
        }
    }
}

/// A number of bytes, written `1048576`, `512KiB`, `64MiB`, `2GiB` (or kB/MB/GB, powers
/// of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let unit_size = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, kB, MB or GB)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a size like 512MiB"))?;
        n.checked_mul(unit_size)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn redacted<S: Serializer>(tokens: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(tokens.iter().map(|_| "***"))
}

/// The environment variables that override keys, as (variable, section.key).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("TASKER_DATABASE_URL", "database.url"),
    ("TASKER_DATABASE_POOL_SIZE", "database.pool_size"),
    ("TASKER_ENGINE_POLL_INTERVAL", "engine.poll_interval"),
    ("TASKER_ENGINE_VISIBILITY_GRACE", "engine.visibility_grace"),
    ("TASKER_ENGINE_RETENTION", "engine.retention"),
    ("TASKER_WORKER_QUEUES", "worker.queues"),
    ("TASKER_WORKER_CONCURRENCY", "worker.concurrency"),
    ("TASKER_API_LISTEN", "api.listen"),
    ("TASKER_API_TOKENS", "api.tokens"),
    ("TASKER_API_BODY_LIMIT", "api.body_limit"),
    ("TASKER_API_READ_TIMEOUT", "api.read_timeout"),
    ("TASKER_METRICS_LISTEN", "metrics.listen"),
    ("TASKER_MEMORY_HIGH_WATERMARK", "memory.high_watermark"),
    ("TASKER_MEMORY_LOW_WATERMARK", "memory.low_watermark"),
    ("TASKER_MEMORY_SAMPLE_INTERVAL", "memory.sample_interval"),
    ("TASKER_LOG_FORMAT", "log.format"),
    ("TASKER_LOG_LEVEL", "log.level"),
    ("TASKER_OTEL_ENDPOINT", "otel.endpoint"),
    ("TASKER_OTEL_SERVICE_NAME", "otel.service_name"),
    ("TASKER_HANDLERS_SHELL_ALLOW", "handlers.shell.allow"),
];

/// The variable naming the configuration file.
pub const CONFIG_ENV: &str = "TASKER_CONFIG";

/// ` (section.key)` for the `key = value` line at byte `at` of a TOML text, if it is one.
fn key_at(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let section = text[..start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .map_or(String::new(), |s| format!("{}.", s.trim()));
    format!(" ({section}{})", key.trim())
}

impl Config {
    /// The file at `path` (none: defaults), then the `TASKER_…` variables of `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                toml::from_str(&text).map_err(|e: toml::de::Error| {
                    let at = e.span().map_or(String::new(), |span| {
                        let before = &text[..span.start.min(text.len())];
                        let line = before.matches('\n').count() + 1;
                        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                        format!(" line {line}, column {column}{}", key_at(&text, span.start))
                    });
                    ConfigError(format!(
                        "config file {}{at}: {}",
                        path.display(),
                        e.message()
                    ))
                })?
            }
        };
        for (name, value) in env {
            if name.starts_with("TASKER_")
                && name != CONFIG_ENV
                && name != crate::backend::SQLITE_SYNCHRONOUS_ENV
            {
                config.apply_env(&name, &value)?;
            }
        }
        config.check()?;
        Ok(config)
    }

    fn apply_env(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let Some((_, key)) = ENV_KEYS.iter().find(|(n, _)| *n == name) else {
            return Err(ConfigError(format!(
                "unknown environment variable {name} (Tasker reads {} and {CONFIG_ENV})",
                ENV_KEYS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let bad = |why: String| ConfigError(format!("{name} (key {key}): {why}"));
        let list = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let duration = || parse_duration(value).map_err(|e| bad(e.to_string()));
        let number = |what: &str| {
            value
                .parse::<u32>()
                .map_err(|_| bad(format!("`{value}` is not {what}")))
        };
        match *key {
            "database.url" => self.database.url = Some(value.to_owned()),
            "database.pool_size" => {
                self.database.pool_size = Some(number("a number of connections")?)
            }
            "engine.poll_interval" => self.engine.poll_interval = duration()?,
            "engine.visibility_grace" => self.engine.visibility_grace = duration()?,
            "engine.retention" => self.engine.retention = Some(duration()?),
            "worker.queues" => self.worker.queues = list(),
            "worker.concurrency" => self.worker.concurrency = number("a number of steps")? as usize,
            "api.listen" => self.api.listen = value.to_owned(),
            "api.tokens" => {
                // A blank secret must not turn authentication off without a word.
                self.api.tokens = list();
                if self.api.tokens.is_empty() {
                    return Err(bad(
                        "set but empty; unset it to serve without authentication".into(),
                    ));
                }
            }
            "api.body_limit" => self.api.body_limit = value.parse().map_err(bad)?,
            "api.read_timeout" => self.api.read_timeout = duration()?,
            "metrics.listen" => self.metrics.listen = Some(value.to_owned()),
            "memory.high_watermark" => {
                self.memory.high_watermark = Some(value.parse().map_err(bad)?)
            }
            "memory.low_watermark" => self.memory.low_watermark = Some(value.parse().map_err(bad)?),
            "memory.sample_interval" => self.memory.sample_interval = duration()?,
            "log.format" => self.log.format = value.parse().map_err(bad)?,
            "log.level" => self.log.level = value.to_owned(),
            "otel.endpoint" => self.otel.endpoint = Some(value.to_owned()),
            "otel.service_name" => self.otel.service_name = Some(value.to_owned()),
            "handlers.shell.allow" => self.handlers.shell.allow = list(),
            other => unreachable!("ENV_KEYS names {other}, which is not handled"),
        }
        Ok(())
    }

    /// Values that parse but cannot work together.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        if let Some(url) = &self.database.url
            && !["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return bad("database.url", "use postgres://… or sqlite:PATH".into());
        }
        if self.database.pool_size == Some(0) {
            return bad("database.pool_size", "must be at least 1".into());
        }
        if self.worker.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1".into());
        }
        for q in &self.worker.queues {
            if let Err(why) = tasker_core::names::check_queue_name(q) {
                return bad("worker.queues", format!("queue `{q}` {why}"));
            }
        }
        if let Err(e) = self.api.listen.parse::<SocketAddr>() {
            return bad("api.listen", format!("`{}`: {e}", self.api.listen));
        }
        if let Some(listen) = &self.metrics.listen
            && let Err(e) = listen.parse::<SocketAddr>()
        {
            return bad("metrics.listen", format!("`{listen}`: {e}"));
        }
        if let Err(e) = self.api_tokens() {
            return bad("api.tokens", e);
        }
        if self.api.read_timeout.is_zero() {
            return bad("api.read_timeout", "must be more than 0".into());
        }
        if self.api.body_limit.0 == 0 {
            return bad("api.body_limit", "must be more than 0".into());
        }
        match (self.memory.high_watermark, self.memory.low_watermark) {
            (Some(high), Some(low)) if low >= high => {
                return bad(
                    "memory.low_watermark",
                    format!("{low} must be below memory.high_watermark ({high})"),
                );
            }
            (None, Some(_)) => {
                return bad(
                    "memory.low_watermark",
                    "set memory.high_watermark too".into(),
                );
            }
            _ => {}
        }
        if self.memory.sample_interval.is_zero() {
            return bad("memory.sample_interval", "must be more than 0".into());
        }
        if let Some(endpoint) = &self.otel.endpoint
            && let Err(e) = tasker_engine::trace::traces_url(endpoint)
        {
            return bad("otel.endpoint", e.to_string());
        }
        if self.otel.service_name.as_deref().is_some_and(str::is_empty) {
            return bad("otel.service_name", "must not be empty".into());
        }
        Ok(())
    }

    /// The API's tokens with their scopes (`read:…`, `write:…`, `admin:…`; bare is admin).
    pub fn api_tokens(&self) -> Result<Vec<tasker_api::Token>, String> {
        self.api
            .tokens
            .iter()
            .map(|t| tasker_api::Token::parse(t))
            .collect()
    }

    /// The handlers of this process: the built-in ones, `shell` where it is allowed.
    pub fn handlers(&self) -> tasker_engine::HandlerRegistry {
        let builtins = tasker_engine::HandlerRegistry::with_builtins();
        match &self.handlers.shell.allow {
            allow if allow.is_empty() => builtins,
            allow => builtins.with_shell(tasker_engine::ShellPolicy::Allow(allow.clone())),
        }
    }

    /// The memory limits, when a high watermark is set; the low one defaults to 80 % of it.
    pub fn memory_limits(&self) -> Option<tasker_engine::pressure::MemoryLimits> {
        let high = self.memory.high_watermark?.0;
        let low = self.memory.low_watermark.map_or(high / 5 * 4, |l| l.0);
        Some(tasker_engine::pressure::MemoryLimits {
            high_watermark: high,
            low_watermark: low,
            interval: self.memory.sample_interval,
            sampler: tasker_engine::pressure::Sampler::resident(),
        })
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(url) = &shown.database.url {
            shown.database.url = Some(crate::backend::redact(url));
        }
        toml::to_string_pretty(&shown).expect("a configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_file_then_environment() {
        let f = file(
            "[api]\nlisten = \"0.0.0.0:9000\"\ntokens = [\"a\"]\n[engine]\nretention = \"30d\"\n[memory]\nhigh_watermark = \"512MiB\"\n",
        );
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("TASKER_API_TOKENS", "x, y"),
                ("TASKER_WORKER_CONCURRENCY", "3"),
                ("HOME", "/"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        assert_eq!(c.api.tokens, ["x", "y"]);
        assert_eq!(c.worker.concurrency, 3);
        assert_eq!(c.engine.poll_interval, Duration::from_secs(5));
        assert_eq!(c.engine.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.otel.endpoint, None, "traces are off unless configured");
        let limits = c.memory_limits().unwrap();
        assert_eq!(
            (limits.high_watermark, limits.low_watermark),
            (512 << 20, (512 << 20) / 5 * 4)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = file("[memory]\nhigh_watermak = \"1GiB\"\n");
        let e = Config::load(Some(unknown.path()), []).unwrap_err().0;
        assert!(e.contains("high_watermak") && e.contains("line 2"), "{e}");
        let bad_size = file("[api]\nbody_limit = \"12 parsecs\"\n");
        let e = Config::load(Some(bad_size.path()), []).unwrap_err().0;
        assert!(
            e.contains("line 2, column 14 (api.body_limit): `12 parsecs`"),
            "{e}"
        );
        let e = Config::load(None, env(&[("TASKER_MEMORY_HIGH_WATERMARK", "lots")]))
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("TASKER_MEMORY_HIGH_WATERMARK (key memory.high_watermark)"),
            "{e}"
        );
        let e = Config::load(None, env(&[("TASKER_API_TOKEN", "x")]))
            .unwrap_err()
            .0;
        assert!(
            e.contains("unknown environment variable TASKER_API_TOKEN"),
            "{e}"
        );
        let e = Config::load(
            None,
            env(&[
                ("TASKER_MEMORY_HIGH_WATERMARK", "1MiB"),
                ("TASKER_MEMORY_LOW_WATERMARK", "2MiB"),
            ]),
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("memory.low_watermark: 2MiB must be below"),
            "{e}"
        );
        let e = Config::load(None, env(&[("TASKER_API_LISTEN", "nowhere")]))
            .unwrap_err()
            .0;
        assert!(e.starts_with("api.listen:"), "{e}");
        let e = Config::load(None, env(&[("TASKER_API_TOKENS", " ")]))
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("TASKER_API_TOKENS (key api.tokens): set but empty"),
            "{e}"
        );
        let e = Config::load(None, env(&[("TASKER_DATABASE_POOL_SIZE", "4294967297")]))
            .unwrap_err()
            .0;
        assert!(e.contains("not a number of connections"), "{e}");
        let e = Config::load(None, env(&[("TASKER_LOG_FORMAT", "xml")]))
            .unwrap_err()
            .0;
        assert!(e.contains("log.format") && e.contains("xml"), "{e}");
        let e = Config::load(None, env(&[("TASKER_OTEL_ENDPOINT", "localhost:4318")]))
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("otel.endpoint: `localhost:4318`: use an http:// URL"),
            "{e}"
        );
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("1048576".parse::<ByteSize>().unwrap().to_string(), "1MiB");
        assert_eq!("2 GB".parse::<ByteSize>().unwrap(), ByteSize(2_000_000_000));
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        assert!("5 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn the_effective_configuration_hides_secrets() {
        let c = Config::load(
            None,
            env(&[
                ("TASKER_API_TOKENS", "s3cret"),
                ("TASKER_DATABASE_URL", "postgres://u:pw@h/db"),
            ]),
        )
        .unwrap();
        let shown = c.to_redacted_toml();
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("tokens = [\"***\"]"), "{shown}");
        // What is printed loads again.
        let f = file(&shown.replace("[\"***\"]", "[\"t\"]"));
        Config::load(Some(f.path()), []).unwrap();
    }

    #[test]
    fn every_key_is_documented() {
        let docs = include_str!("../../../docs/configuration.md");
        for (var, key) in ENV_KEYS {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/configuration.md lacks {key}"
            );
            assert!(docs.contains(var), "docs/configuration.md lacks {var}");
        }
    }
}
