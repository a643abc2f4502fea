//! Strings decoded as views of the text they come from: borrowed when they hold no JSON
//! escape, copied only when one forces it. serde's `borrow` attribute does this for a
//! struct's fields but not for a map's keys, which [`CowStr`] covers.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Visitor};

/// Deserializes a string (a map key included) borrowed from the input when it can be,
/// copied when it has escapes.
pub struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Cow<'_, str> {
        let mut d = serde_json::Deserializer::from_str(json);
        CowStr.deserialize(&mut d).unwrap()
    }

    #[test]
    fn borrows_unless_an_escape_forces_a_copy() {
        assert!(matches!(decode(r#""plain""#), Cow::Borrowed("plain")));
        let escaped = decode(r#""a\"b""#);
        assert!(matches!(&escaped, Cow::Owned(s) if s == "a\"b"));
    }
}
