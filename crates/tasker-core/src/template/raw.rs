//! The template as written: every field optional where the format allows, unknown
//! fields rejected by the parser (which then reports their line and column).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::duration::serde_human_opt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    #[serde(deserialize_with = "text")]
    pub namespace: String,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text")]
    pub version: String,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
    #[serde(default)]
    pub context_schema: Option<Value>,
    #[serde(default, deserialize_with = "optional_mapping")]
    pub retry: Option<RawRetry>,
    #[serde(default, with = "serde_human_opt")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "optional_mapping")]
    pub concurrency: Option<RawConcurrency>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default, deserialize_with = "mappings")]
    pub steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConcurrency {
    #[serde(deserialize_with = "text")]
    pub key: String,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(default, deserialize_with = "optional_text")]
    pub handler: Option<String>,
    #[serde(default, deserialize_with = "optional_mapping")]
    pub wait_for: Option<RawWait>,
    #[serde(default, deserialize_with = "optional_text")]
    pub for_each: Option<String>,
    #[serde(default)]
    pub max_items: Option<u32>,
    #[serde(default, deserialize_with = "optional_mapping")]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub decides: Vec<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default, deserialize_with = "optional_mapping")]
    pub retry: Option<RawRetry>,
    #[serde(default, with = "serde_human_opt")]
    pub timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(deserialize_with = "text")]
    pub key: String,
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWait {
    #[serde(deserialize_with = "text")]
    pub signal: String,
    #[serde(default, with = "serde_human_opt")]
    pub timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub max_attempts: Option<u32>,
    pub retryable: Option<bool>,
    #[serde(default, deserialize_with = "mapping")]
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

/// A struct read from a mapping only. Serde's derived structs also read a sequence of
/// their fields in order, so `retry: [3, true]` would mean something; templates name
/// their fields.
pub(super) struct Mapping<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Mapping<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMaps(PhantomData)).map(Mapping)
    }
}

fn mapping<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Mapping::deserialize(d).map(|m| m.0)
}

fn optional_mapping<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Mapping<T>>::deserialize(d).map(|o| o.map(|m| m.0))
}

fn mappings<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<Mapping<T>>::deserialize(d).map(|v| v.into_iter().map(|m| m.0).collect())
}

/// A string, and only a string: asked for one, YAML's parser would read `null`, `false`
/// or `12` as that text, so a name typed as a YAML value of another kind would pass.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct OnlyText;
    impl Visitor<'_> for OnlyText {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string (quote it)")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_owned())
        }
    }
    d.deserialize_any(OnlyText)
}

fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d).map(Some)
}
