//! Task templates: a named, versioned DAG of steps, written in YAML.
//!
//! [`parse_template`] and [`load_path`] turn YAML into a validated [`TaskTemplate`] or
//! into [`TemplateErrors`] that name the file, the step and the problem, with the line
//! and column where they are known. Defaults (retry, timeout, queue) are resolved here,
//! once, so a template's steps carry everything a worker needs.

mod canonical;
mod error;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::backoff::RetryPolicy;
use crate::duration::serde_human;
use crate::json_path;
use crate::rate::RateLimit;

pub use error::{ContextError, TemplateError, TemplateErrors};
pub use validate::check_priority;

/// A step timeout when neither the step nor its template sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A validated template.
#[derive(Clone, Debug, Serialize)]
pub struct TaskTemplate {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_schema: Option<ContextSchema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Its tasks' steps are taken from their queues before those of lower priority
    /// (higher first; 0 by default; a submission may override it).
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i32,
    pub steps: Vec<StepTemplate>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The longest value a concurrency key may have.
const MAX_KEY_VALUE: usize = 255;

/// At most `limit` tasks of a template with the same value at `key` (`context.<path>`)
/// are in progress at once; the others stay pending and start, oldest first, as slots
/// free.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
}

/// One step of a template, with its defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct StepTemplate {
    pub name: String,
    /// Empty for a step that waits for a signal (`wait_for`).
    pub handler: String,
    pub depends_on: Vec<String>,
    /// The children this step chooses among: its result's `next` names those that
    /// run, and the others are skipped. Empty for a step that decides nothing.
    pub decides: Vec<String>,
    /// The queue that carries this step to workers (the namespace unless set).
    pub queue: String,
    pub config: Value,
    pub retry: RetryPolicy,
    /// How long an attempt may run; for a step that waits, how long it waits.
    pub timeout: Duration,
    /// Set for a step that runs no handler and completes with the payload of a signal.
    pub wait_for: Option<WaitFor>,
    /// Set for a step that runs its handler once per element of an array.
    pub for_each: Option<ForEach>,
    /// Set for a step whose starts are limited by a shared rate (each instance's, for a
    /// `for_each` step).
    pub rate_limit: Option<RateLimit>,
}

/// The most instances a `for_each` step creates unless its `max_items` says otherwise.
pub const DEFAULT_MAX_ITEMS: u32 = 10_000;

/// A step's fan-out over data: one instance per element of the array at `source`
/// (`context.<path>`, or `<parent>.<path>` into a parent's result), at most `max_items`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ForEach {
    pub source: String,
    pub max_items: u32,
}

impl ForEach {
    /// Where the array is: the parent named first (`None` for the context), then the
    /// keys of the path (a number indexes an array).
    pub fn split(&self) -> (Option<&str>, Vec<&str>) {
        let mut parts = self.source.split('.');
        let first = parts.next().unwrap_or_default();
        let path = parts.collect();
        ((first != "context").then_some(first), path)
    }
}

/// What a step waits for: a signal of this name delivered to its task, for at most
/// `timeout` after the step is reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitFor {
    pub signal: String,
    #[serde(with = "serde_human")]
    pub timeout: Duration,
}

/// Written by hand so that a step that waits carries only what applies to it (it has
/// no handler, queue, config, retry or timeout of its own), and a step that runs a
/// handler keeps the canonical form it has always had.
impl Serialize for StepTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("StepTemplate", 11)?;
        m.serialize_field("name", &self.name)?;
        if self.wait_for.is_none() {
            m.serialize_field("handler", &self.handler)?;
        }
        m.serialize_field("depends_on", &self.depends_on)?;
        if !self.decides.is_empty() {
            m.serialize_field("decides", &self.decides)?;
        }
        if let Some(each) = &self.for_each {
            m.serialize_field("for_each", &each.source)?;
            m.serialize_field("max_items", &each.max_items)?;
        }
        if let Some(limit) = &self.rate_limit {
            m.serialize_field("rate_limit", limit)?;
        }
        match &self.wait_for {
            Some(wait) => m.serialize_field("wait_for", wait)?,
            None => {
                m.serialize_field("queue", &self.queue)?;
                m.serialize_field("config", &self.config)?;
                m.serialize_field("retry", &self.retry)?;
                let timeout = crate::duration::HumanDuration(self.timeout);
                m.serialize_field("timeout", &format_args!("{timeout}"))?;
            }
        }
        m.end()
    }
}

/// A compiled JSON Schema for the task context.
#[derive(Clone)]
pub struct ContextSchema {
    schema: Value,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for ContextSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.schema.fmt(f)
    }
}

impl Serialize for ContextSchema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.schema.serialize(s)
    }
}

impl ContextSchema {
    fn compile(schema: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(Self {
            schema,
            validator: Arc::new(validator),
        })
    }
}

/// How a template is named: `namespace/name@version`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub version: &'a str,
}

impl fmt::Display for TemplateKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.version)
    }
}

impl TaskTemplate {
    pub fn key(&self) -> TemplateKey<'_> {
        TemplateKey {
            namespace: &self.namespace,
            name: &self.name,
            version: &self.version,
        }
    }

    /// The template as canonical JSON: two files that mean the same produce the same
    /// text, so a registry can tell a re-registration from a conflicting one. It reads
    /// back as YAML too.
    pub fn canonical_json(&self) -> String {
        canonical::to_json(self)
    }

    /// `(parent, child)` pairs of step positions. Names are looked up in a map: a step
    /// of ten thousand parents costs ten thousand lookups, not their square.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let positions: std::collections::HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut edges = Vec::new();
        for (child, step) in self.steps.iter().enumerate() {
            for dep in &step.depends_on {
                if let Some(&parent) = positions.get(dep.as_str()) {
                    edges.push((parent, child));
                }
            }
        }
        edges
    }

    /// The value of the task's concurrency key in `context` as text (a string as
    /// itself, a number or boolean as written); `None` for a template without
    /// `concurrency`. A key that names nothing, or an object, array or null, is refused.
    pub fn concurrency_value(&self, context: &RawValue) -> Result<Option<String>, ContextError> {
        let Some(c) = &self.concurrency else {
            return Ok(None);
        };
        let path: Vec<&str> = c.key.split('.').skip(1).collect();
        let refuse = |why: String| ContextError {
            template: self.key().to_string(),
            problems: vec![format!("concurrency key `{}` {why}", c.key)],
        };
        let value =
            json_path::at(context, &path).map_err(|e| refuse(format!("names nothing: {e}")))?;
        let text: String = match json_path::kind(value) {
            "a string" => serde_json::from_str(value.get()).map_err(|e| refuse(e.to_string()))?,
            "a number" | "a boolean" => value.get().trim().to_owned(),
            other => {
                return Err(refuse(format!(
                    "is {other}: it must be a string, a number or a boolean"
                )));
            }
        };
        if text.len() > MAX_KEY_VALUE {
            return Err(refuse(format!(
                "is {} bytes long: at most {MAX_KEY_VALUE}",
                text.len()
            )));
        }
        Ok(Some(text))
    }

    /// Checks a submitted context against the template's `context_schema`, if any.
    pub fn check_context(&self, context: &Value) -> Result<(), ContextError> {
        let Some(schema) = &self.context_schema else {
            return Ok(());
        };
        let problems: Vec<String> = schema
            .validator
            .iter_errors(context)
            .map(|e| {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                format!("at {at}: {e}")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ContextError {
                template: self.key().to_string(),
                problems,
            })
        }
    }
}

/// Parses and validates one template. `file` names the source in errors.
pub fn parse_template(source: &str, file: &str) -> Result<TaskTemplate, TemplateErrors> {
    let raw::Mapping(raw) = serde_norway::from_str(source)
        .map_err(|e| TemplateErrors::one(TemplateError::from_yaml(file, &e)))?;
    validate::validate(raw, source, file)
}

/// [`parse_template`] for a template written as JSON, read by a JSON parser: YAML's
/// refuses some valid JSON (a surrogate pair such as `"\ud83d\ude80"`, which most JSON
/// encoders write for characters beyond the Basic Multilingual Plane).
pub fn parse_json_template(source: &str, file: &str) -> Result<TaskTemplate, TemplateErrors> {
    let raw::Mapping(raw) = serde_json::from_str(source)
        .map_err(|e| TemplateErrors::one(TemplateError::from_json(file, &e)))?;
    validate::validate(raw, source, file)
}

/// Loads exactly one template from a file (a directory or a multi-template path is an
/// error that says to name one file).
pub fn load_one(path: &Path) -> Result<TaskTemplate, TemplateErrors> {
    let mut templates = load_path(path)?;
    match templates.len() {
        1 => Ok(templates.remove(0)),
        n => Err(TemplateErrors::one(TemplateError::file(
            &path.display().to_string(),
            format!("holds {n} templates; give the file of the one to run"),
        ))),
    }
}

/// Loads a template file, or every template file under a directory. All problems of
/// all files are reported together.
pub fn load_path(path: &Path) -> Result<Vec<TaskTemplate>, TemplateErrors> {
    let mut templates = Vec::new();
    let mut errors = Vec::new();
    for (_, loaded) in load_each(path)? {
        match loaded {
            Ok(t) => templates.push(t),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(templates)
    } else {
        Err(TemplateErrors(errors))
    }
}

/// A template file and what loading it gave.
pub type LoadedFile = (PathBuf, Result<TaskTemplate, TemplateErrors>);

/// Every file of `path` — the file itself, or every `*.yaml`, `*.yml` and `*.json`
/// under a directory at any depth, sorted — each loaded on its own (`.json` as JSON).
/// A template defined twice is a problem of the later file. The error says the path
/// cannot be read or the directory holds no template file.
pub fn load_each(path: &Path) -> Result<Vec<LoadedFile>, TemplateErrors> {
    let mut files = Vec::new();
    if path.is_dir() {
        template_files(path, &mut files)
            .map_err(|(dir, e)| TemplateErrors::one(TemplateError::io(&dir, &e)))?;
        files.sort();
        if files.is_empty() {
            return Err(TemplateErrors::one(TemplateError::file(
                &path.display().to_string(),
                "the directory holds no *.yaml, *.yml or *.json template".into(),
            )));
        }
    } else {
        files.push(path.to_path_buf());
    }
    let mut keys = std::collections::HashSet::new();
    let loaded = files
        .into_iter()
        .map(|file| {
            let name = file.display().to_string();
            let json = file.extension().is_some_and(|e| e == "json");
            let loaded = crate::file::read_text(&file, crate::file::MAX_TEMPLATE_BYTES)
                .map_err(|e| TemplateErrors::one(TemplateError::io(&name, &e)))
                .and_then(|source| {
                    if json {
                        parse_json_template(&source, &name)
                    } else {
                        parse_template(&source, &name)
                    }
                })
                .and_then(|t| {
                    if keys.insert(t.key().to_string()) {
                        Ok(t)
                    } else {
                        Err(TemplateErrors::one(TemplateError::file(
                            &name,
                            format!(
                                "template {} is defined twice in {}",
                                t.key(),
                                path.display()
                            ),
                        )))
                    }
                });
            (file, loaded)
        })
        .collect();
    Ok(loaded)
}

/// The template files under `dir`, at any depth (symbolic links to
/// directories are not followed); the error names the directory it could not read.
fn template_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), (String, std::io::Error)> {
    let failed = |e| (dir.display().to_string(), e);
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let p = entry.path();
        if entry.file_type().map_err(failed)?.is_dir() {
            template_files(&p, files)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
