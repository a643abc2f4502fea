//! The template as written: every field optional where the format allows, unknown
//! fields rejected by the parser (which then reports their line and column).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::duration::serde_human_opt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub context_schema: Option<Value>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default, with = "serde_human_opt")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub name: String,
    pub handler: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default, with = "serde_human_opt")]
    pub timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub max_attempts: Option<u32>,
    pub retryable: Option<bool>,
    #[serde(default)]
    pub backoff: RawBackoff,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    #[serde(default, with = "serde_human_opt")]
    pub initial: Option<Duration>,
    #[serde(default, with = "serde_human_opt")]
    pub max: Option<Duration>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
}
