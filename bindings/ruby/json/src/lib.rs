//! The Ruby binding's JSON reader: JSON text to values made by a [`Builder`], with no
//! tree in between. The binding's builder makes Ruby objects; [`ValueBuilder`] (feature
//! `value`) makes `serde_json::Value`, so that the reader is tested and fuzzed against
//! serde_json without a Ruby VM.
//!
//! A reader of its own rather than a serde visitor: serde_json hands integers beyond 64
//! bits to visitors as lossy floats unless its `arbitrary_precision` feature is on, and
//! that feature would change number handling in every crate of the workspace.
//!
//! It accepts the documents serde_json accepts, with the same values, except that:
//! - an integer beyond `i64` reaches the builder as its digits, exact, where serde_json
//!   makes a float of it, or refuses it beyond `f64`;
//! - `-0` is the integer 0 (as Ruby's own JSON reads it), where serde_json makes -0.0;
//! - nesting is limited by the caller, serde_json's to 127 levels.

#[cfg(any(test, feature = "value"))]
mod value;

#[cfg(any(test, feature = "value"))]
pub use value::{IntegerBeyondF64, ValueBuilder};

/// Makes the values of a document, innermost first.
pub trait Builder {
    type Value;
    type Key;
    type Object;
    type Array;
    type Error;

    fn null(&mut self) -> Self::Value;
    fn boolean(&mut self, b: bool) -> Self::Value;
    fn integer(&mut self, n: i64) -> Self::Value;
    /// An integer outside `i64`, as written: digits after an optional `-`.
    fn big_integer(&mut self, digits: &str) -> Result<Self::Value, Self::Error>;
    /// A finite float.
    fn float(&mut self, f: f64) -> Self::Value;
    fn string(&mut self, s: &str) -> Self::Value;
    /// An object's key: its own method, as keys repeat and may be made differently.
    fn key(&mut self, s: &str) -> Self::Key;
    fn object(&mut self) -> Self::Object;
    fn insert(
        &mut self,
        object: &mut Self::Object,
        key: Self::Key,
        value: Self::Value,
    ) -> Result<(), Self::Error>;
    fn end_object(&mut self, object: Self::Object) -> Self::Value;
    fn array(&mut self) -> Self::Array;
    fn push(&mut self, array: &mut Self::Array, value: Self::Value) -> Result<(), Self::Error>;
    fn end_array(&mut self, array: Self::Array) -> Self::Value;
}

/// Why a text could not be read.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ReadError<E> {
    /// Not JSON: what was expected, at the byte where reading stopped.
    #[error("invalid JSON at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
    /// Arrays and objects nested deeper than the limit the caller gave.
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// The builder failed.
    #[error("{0}")]
    Build(E),
}

/// The value of the JSON text `json`, made by `builder`, with arrays and objects nested
/// at most `max_depth` levels (the reader recurses once per level).
pub fn read<B: Builder>(
    builder: &mut B,
    json: &str,
    max_depth: usize,
) -> Result<B::Value, ReadError<B::Error>> {
    let mut reader = Reader {
        builder,
        text: json,
        pos: 0,
        depth_left: max_depth,
        max_depth,
        scratch: String::new(),
    };
    let value = reader.value()?;
    reader.skip_ws();
    if reader.pos != json.len() {
        return Err(reader.syntax("trailing characters after the JSON value"));
    }
    Ok(value)
}

type Read<T, B> = Result<T, ReadError<<B as Builder>::Error>>;

struct Reader<'b, 't, B> {
    builder: &'b mut B,
    text: &'t str,
    /// Always at a character boundary when a slice of `text` is taken: it stops only
    /// at ASCII bytes or at the end.
    pos: usize,
    depth_left: usize,
    max_depth: usize,
    /// Holds a string while its escapes are decoded.
    scratch: String,
}

impl<B: Builder> Reader<'_, '_, B> {
    fn syntax(&self, what: &'static str) -> ReadError<B::Error> {
        ReadError::Syntax { at: self.pos, what }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn rest_starts_with(&self, prefix: &[u8]) -> bool {
        self.text.as_bytes()[self.pos..].starts_with(prefix)
    }

    fn value(&mut self) -> Read<B::Value, B> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string(B::string),
            Some(b't') => self.literal("true").map(|()| self.builder.boolean(true)),
            Some(b'f') => self.literal("false").map(|()| self.builder.boolean(false)),
            Some(b'n') => self.literal("null").map(|()| self.builder.null()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end")),
        }
    }

    fn nested(&mut self, read: fn(&mut Self) -> Read<B::Value, B>) -> Read<B::Value, B> {
        if self.depth_left == 0 {
            return Err(ReadError::TooDeep {
                limit: self.max_depth,
            });
        }
        self.depth_left -= 1;
        self.pos += 1;
        let value = read(self);
        self.depth_left += 1;
        value
    }

    fn literal(&mut self, word: &str) -> Read<(), B> {
        if self.rest_starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    fn object(&mut self) -> Read<B::Value, B> {
        let mut object = self.builder.object();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(self.builder.end_object(object));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a string key"));
            }
            let key = self.string(B::key)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected `:`"));
            }
            self.pos += 1;
            let value = self.value()?;
            self.builder
                .insert(&mut object, key, value)
                .map_err(ReadError::Build)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(self.builder.end_object(object));
                }
                _ => return Err(self.syntax("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Read<B::Value, B> {
        let mut array = self.builder.array();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(self.builder.end_array(array));
        }
        loop {
            let value = self.value()?;
            self.builder
                .push(&mut array, value)
                .map_err(ReadError::Build)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(self.builder.end_array(array));
                }
                _ => return Err(self.syntax("expected `,` or `]`")),
            }
        }
    }

    /// A string at its opening quote, given to `make` (a key's or a value's maker).
    fn string<T>(&mut self, make: fn(&mut B, &str) -> T) -> Read<T, B> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => return self.escaped_string(start, make),
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(self.syntax("unterminated string")),
            }
        }
        let text = &self.text[start..self.pos];
        self.pos += 1;
        Ok(make(self.builder, text))
    }

    /// The rest of a string from its first backslash, `start` being where it began.
    fn escaped_string<T>(&mut self, start: usize, make: fn(&mut B, &str) -> T) -> Read<T, B> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // Where the characters not yet copied into `scratch` begin.
        let mut run = start;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    scratch.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    let Some(escape) = self.peek() else {
                        return Err(self.syntax("unterminated string"));
                    };
                    self.pos += 1;
                    match escape {
                        b'"' | b'\\' | b'/' => scratch.push(char::from(escape)),
                        b'b' => scratch.push('\u{8}'),
                        b'f' => scratch.push('\u{c}'),
                        b'n' => scratch.push('\n'),
                        b'r' => scratch.push('\r'),
                        b't' => scratch.push('\t'),
                        b'u' => scratch.push(self.unicode_escape()?),
                        _ => return Err(self.syntax("unknown escape")),
                    }
                    run = self.pos;
                }
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(self.syntax("unterminated string")),
            }
        }
        scratch.push_str(&self.text[run..self.pos]);
        self.pos += 1;
        let value = make(self.builder, &scratch);
        self.scratch = scratch;
        Ok(value)
    }

    /// The character of a `\uXXXX` escape (after the `u`), joining surrogate pairs.
    fn unicode_escape(&mut self) -> Read<char, B> {
        let unpaired = "unpaired surrogate in a \\u escape";
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.rest_starts_with(b"\\u") {
                return Err(self.syntax(unpaired));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.syntax(unpaired));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.syntax(unpaired))
    }

    fn hex4(&mut self) -> Read<u32, B> {
        let digits = self
            .text
            .as_bytes()
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.syntax("bad \\u escape"))?;
        self.pos += 4;
        Ok(digits)
    }

    fn digits(&mut self) -> bool {
        let from = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos > from
    }

    fn number(&mut self) -> Read<B::Value, B> {
        let start = self.pos;
        let mut integer = true;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        if !self.digits() {
            return Err(self.syntax("expected digits"));
        }
        if self.text.as_bytes()[int_start] == b'0' && self.pos - int_start > 1 {
            return Err(self.syntax("leading zero in a number"));
        }
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !self.digits() {
                return Err(self.syntax("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.digits() {
                return Err(self.syntax("expected digits in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        if !integer {
            let float: f64 = text.parse().map_err(|_| self.syntax("bad number"))?;
            // `str::parse` makes Infinity of `1e400`; JSON has none (serde_json refuses it).
            if !float.is_finite() {
                return Err(self.syntax("number out of range"));
            }
            return Ok(self.builder.float(float));
        }
        match text.parse::<i64>() {
            Ok(small) => Ok(self.builder.integer(small)),
            Err(_) => self.builder.big_integer(text).map_err(ReadError::Build),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn read_value(text: &str) -> Result<Value, ReadError<IntegerBeyondF64>> {
        read(&mut ValueBuilder, text, 128)
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"a": [1, -2, 3.5, 1e3, -1.5E-3, true, false, null], "b": {"c": "d"}}"#,
            r#""caf\u00e9 \ud83d\ude80 \"q\" \\ \/ \b\f\n\r\t""#,
            " \t\r\n[ ] ",
            "{}",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
            r#"{"k": 1, "k": 2}"#,
            "\"\u{7f}é\"",
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(read_value(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses_and_says_where() {
        for (text, at, what) in [
            (r#"{"a": }"#, 6, "expected a value"),
            ("[1, 2", 5, "expected `,` or `]`"),
            (r#""\x""#, 3, "unknown escape"),
            ("01", 2, "leading zero in a number"),
            ("[1] 2", 4, "trailing characters after the JSON value"),
            (r#""\ud800""#, 7, "unpaired surrogate in a \\u escape"),
            (r#""\u+041""#, 3, "bad \\u escape"),
            ("-", 1, "expected digits"),
            ("1.", 2, "expected digits after `.`"),
            ("tru", 0, "expected a value"),
            ("{1: 2}", 1, "expected a string key"),
            (r#"{"a" 1}"#, 5, "expected `:`"),
            ("\"a\u{1}\"", 2, "control character in a string"),
            ("\"abc", 4, "unterminated string"),
            ("", 0, "unexpected end"),
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            assert_eq!(
                read_value(text),
                Err(ReadError::Syntax { at, what }),
                "{text}"
            );
        }
    }

    /// Found by fuzzing: a float beyond `f64` was read as Infinity, which serde_json
    /// refuses and which cannot become JSON again.
    #[test]
    fn refuses_floats_beyond_f64() {
        for (text, at) in [
            (
                r#"{"dask_uuiask_uuids":2220222222222222222e22222222222}"#,
                52,
            ),
            ("1e400", 5),
            ("-1e400", 6),
            ("[1.5e309]", 8),
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            let what = "number out of range";
            assert_eq!(
                read_value(text),
                Err(ReadError::Syntax { at, what }),
                "{text}"
            );
        }
        let tiny = "1e-400";
        assert_eq!(read_value(tiny), Ok(serde_json::from_str(tiny).unwrap()));
    }

    #[test]
    fn the_depth_limit_is_the_callers() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(read(&mut ValueBuilder, &deep(3), 3).is_ok());
        assert_eq!(
            read(&mut ValueBuilder, &deep(4), 3),
            Err(ReadError::TooDeep { limit: 3 })
        );
        assert_eq!(
            ReadError::<IntegerBeyondF64>::TooDeep { limit: 3 }.to_string(),
            "JSON nested deeper than 3 levels"
        );
    }
}
