//! JSON text ↔ Ruby objects, built directly: no `serde_json::Value` in between.
//!
//! JSON → Ruby is a small recursive reader rather than a serde visitor because serde_json
//! hands integers beyond 64 bits to visitors as lossy floats unless its
//! `arbitrary_precision` feature is on, and that feature would change number handling in
//! every crate of the workspace. The reader keeps bignums exact and builds Hash keys as
//! interned frozen strings, so the keys repeated across a document exist once.
//!
//! Ruby → JSON writes into one buffer and names the path of anything that cannot become
//! JSON (`results.items[3].at: a Time cannot become JSON`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::value::{Qfalse, Qtrue};
use magnus::{Error, Fixnum, Float, RArray, RBignum, RHash, RString, Ruby, Symbol, Value};

use crate::errors;
use crate::strings::interned;

/// How deeply arrays and hashes may nest, both ways (`Tasker.max_depth`).
static MAX_DEPTH: AtomicUsize = AtomicUsize::new(128);

pub fn max_depth() -> usize {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// Deeper recursion could overflow a Ruby thread's machine stack (1 MiB; debug frames
/// are large).
const DEPTH_LIMIT: usize = 256;

pub fn set_max_depth(ruby: &Ruby, depth: usize) -> Result<usize, Error> {
    if !(1..=DEPTH_LIMIT).contains(&depth) {
        return Err(Error::new(
            ruby.exception_arg_error(),
            format!("Tasker.max_depth must be from 1 to {DEPTH_LIMIT}"),
        ));
    }
    MAX_DEPTH.store(depth, Ordering::Relaxed);
    Ok(depth)
}

/// Ruby objects from JSON text.
pub fn to_ruby(ruby: &Ruby, json: &str) -> Result<Value, Error> {
    let mut reader = Reader {
        ruby,
        bytes: json.as_bytes(),
        pos: 0,
        depth_left: max_depth(),
        scratch: Vec::new(),
    };
    let value = reader.value()?;
    reader.skip_ws();
    if reader.pos != reader.bytes.len() {
        return Err(reader.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// JSON text from a Ruby object; `root` names it in errors (`results`, `context`).
pub fn to_json(ruby: &Ruby, value: Value, root: &str) -> Result<String, Error> {
    let mut writer = Writer {
        out: Vec::with_capacity(128),
        depth_left: max_depth(),
    };
    match writer.write(value) {
        Ok(()) => Ok(String::from_utf8(writer.out).expect("the writer emits UTF-8 only")),
        Err(failure) => Err(Error::new(
            errors::serialization(ruby),
            failure.describe(root),
        )),
    }
}

struct Reader<'r, 'b> {
    ruby: &'r Ruby,
    bytes: &'b [u8],
    pos: usize,
    depth_left: usize,
    /// Holds a string while its escapes are decoded.
    scratch: Vec<u8>,
}

impl Reader<'_, '_> {
    fn error(&self, what: &str) -> Error {
        Error::new(
            errors::serialization(self.ruby),
            format!("invalid JSON at byte {}: {what}", self.pos),
        )
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(self.string(false)?.as_value()),
            Some(b't') => self.literal("true", self.ruby.qtrue().as_value()),
            Some(b'f') => self.literal("false", self.ruby.qfalse().as_value()),
            Some(b'n') => self.literal("null", self.ruby.qnil().as_value()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn nested(&mut self, read: fn(&mut Self) -> Result<Value, Error>) -> Result<Value, Error> {
        if self.depth_left == 0 {
            return Err(Error::new(
                errors::serialization(self.ruby),
                format!(
                    "JSON nested deeper than {} levels (Tasker.max_depth)",
                    max_depth()
                ),
            ));
        }
        self.depth_left -= 1;
        self.pos += 1;
        let value = read(self);
        self.depth_left += 1;
        value
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, Error> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn object(&mut self) -> Result<Value, Error> {
        let hash = self.ruby.hash_new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(hash.as_value());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string(true)?;
            self.expect(b':')?;
            let value = self.value()?;
            hash.aset(key, value)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(hash.as_value());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, Error> {
        let array = self.ruby.ary_new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(array.as_value());
        }
        loop {
            array.push(self.value()?)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(array.as_value());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// A string at the opening quote; `key` makes it an interned frozen string.
    fn string(&mut self, key: bool) -> Result<RString, Error> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => return self.escaped_string(start, key),
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
        let text = &self.bytes[start..self.pos];
        self.pos += 1;
        Ok(self.make_string(text, key))
    }

    fn make_string(&self, bytes: &[u8], key: bool) -> RString {
        // The input is a `&str` and quotes and escapes are ASCII, so every slice and
        // every decoded escape is UTF-8.
        let text = std::str::from_utf8(bytes).expect("JSON strings are UTF-8");
        if key {
            interned(text)
        } else {
            self.ruby.str_new(text)
        }
    }

    fn escaped_string(&mut self, start: usize, key: bool) -> Result<RString, Error> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&self.bytes[start..self.pos]);
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(escape) = self.peek() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    match escape {
                        b'"' | b'\\' | b'/' => scratch.push(escape),
                        b'b' => scratch.push(0x08),
                        b'f' => scratch.push(0x0c),
                        b'n' => scratch.push(b'\n'),
                        b'r' => scratch.push(b'\r'),
                        b't' => scratch.push(b'\t'),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut utf8 = [0; 4];
                            scratch.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(b) => {
                    scratch.push(b);
                    self.pos += 1;
                }
                None => return Err(self.error("unterminated string")),
            }
        }
        self.pos += 1;
        let string = self.make_string(&scratch, key);
        self.scratch = scratch;
        Ok(string)
    }

    /// The character of a `\uXXXX` escape (after the `u`), joining surrogate pairs.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.bytes[self.pos..].starts_with(b"\\u") {
                return Err(self.error("unpaired surrogate in a \\u escape"));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("unpaired surrogate in a \\u escape"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate in a \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(digits)
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let mut integer = true;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits = |r: &mut Self| {
            let from = r.pos;
            while let Some(b'0'..=b'9') = r.peek() {
                r.pos += 1;
            }
            r.pos > from
        };
        let int_start = self.pos;
        if !digits(self) {
            return Err(self.error("expected digits"));
        }
        if self.bytes[int_start] == b'0' && self.pos - int_start > 1 {
            return Err(self.error("leading zero in a number"));
        }
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !digits(self) {
                return Err(self.error("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error("expected digits in the exponent"));
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).expect("ASCII digits");
        if !integer {
            let float: f64 = text.parse().map_err(|_| self.error("bad number"))?;
            return Ok(self.ruby.float_from_f64(float).as_value());
        }
        if let Ok(small) = text.parse::<i64>() {
            return Ok(self.ruby.integer_from_i64(small).as_value());
        }
        // Beyond 64 bits: Ruby parses the digits into an exact bignum.
        self.ruby.str_new(text).funcall("to_i", ())
    }
}

/// A step of the path to a value: a hash key or an array index.
enum Segment {
    Key(String),
    Index(usize),
}

/// Why a value cannot become JSON, and where it is (innermost segment first).
struct Failure {
    reason: String,
    path: Vec<Segment>,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }

    fn describe(&self, root: &str) -> String {
        let mut path = root.to_owned();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
                Segment::Key(k) if is_identifier(k) => {
                    let _ = write!(path, ".{k}");
                }
                Segment::Key(k) => {
                    let quoted = serde_json::to_string(k).expect("a string serializes");
                    let _ = write!(path, "[{quoted}]");
                }
            }
        }
        format!("{path}: {}", self.reason)
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Writer {
    out: Vec<u8>,
    depth_left: usize,
}

impl Writer {
    fn write(&mut self, value: Value) -> Result<(), Failure> {
        if value.is_nil() {
            self.out.extend_from_slice(b"null");
        } else if Qtrue::from_value(value).is_some() {
            self.out.extend_from_slice(b"true");
        } else if Qfalse::from_value(value).is_some() {
            self.out.extend_from_slice(b"false");
        } else if let Some(n) = Fixnum::from_value(value) {
            serde_json::to_writer(&mut self.out, &n.to_i64()).expect("an integer serializes");
        } else if let Some(f) = Float::from_value(value) {
            let f = f.to_f64();
            if !f.is_finite() {
                return Err(Failure::new(format!(
                    "{} cannot become JSON",
                    if f.is_nan() { "NaN" } else { "Infinity" }
                )));
            }
            serde_json::to_writer(&mut self.out, &f).expect("a finite float serializes");
        } else if let Some(s) = RString::from_value(value) {
            self.string(s)?;
        } else if let Some(h) = RHash::from_value(value) {
            self.nested(|w| w.hash(h))?;
        } else if let Some(a) = RArray::from_value(value) {
            self.nested(|w| w.array(a))?;
        } else if let Some(sym) = Symbol::from_value(value) {
            let name = sym
                .name()
                .map_err(|_| Failure::new("a Symbol that is not UTF-8 cannot become JSON"))?;
            self.text(&name);
        } else if let Some(big) = RBignum::from_value(value) {
            let digits: String = big
                .funcall("to_s", ())
                .map_err(|e| Failure::new(e.to_string()))?;
            self.out.extend_from_slice(digits.as_bytes());
        } else {
            // SAFETY: the class name is copied before Ruby runs again.
            let class = unsafe { value.classname() }.into_owned();
            return Err(Failure::new(format!(
                "a {class} cannot become JSON (use a Hash, Array, String, Integer, Float, \
                 true, false or nil)"
            )));
        }
        Ok(())
    }

    fn nested(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if self.depth_left == 0 {
            return Err(Failure::new(format!(
                "nested deeper than {} levels (Tasker.max_depth); is it recursive?",
                max_depth()
            )));
        }
        self.depth_left -= 1;
        let written = body(self);
        self.depth_left += 1;
        written
    }

    fn text(&mut self, s: &str) {
        serde_json::to_writer(&mut self.out, s).expect("a string serializes");
    }

    fn string(&mut self, s: RString) -> Result<(), Failure> {
        if !s.is_utf8_compatible_encoding() {
            return Err(Failure::new(format!(
                "a String in {} cannot become JSON (encode it as UTF-8)",
                magnus::encoding::RbEncoding::from(s.enc_get()).name()
            )));
        }
        // SAFETY: the bytes are copied into the buffer before Ruby runs again.
        let bytes = unsafe { s.as_slice() };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Failure::new("a String with invalid UTF-8 cannot become JSON"))?;
        self.text(text);
        Ok(())
    }

    fn hash(&mut self, hash: RHash) -> Result<(), Failure> {
        self.out.push(b'{');
        let mut first = true;
        let mut failure = None;
        let iterated = hash.foreach(|key: Value, value: Value| {
            if !first {
                self.out.push(b',');
            }
            first = false;
            let written = self.key(key).and_then(|()| {
                self.out.push(b':');
                self.write(value)
                    .map_err(|f| f.at(Segment::Key(key_name(key))))
            });
            match written {
                Ok(()) => Ok(ForEach::Continue),
                Err(f) => {
                    failure = Some(f);
                    Ok(ForEach::Stop)
                }
            }
        });
        if let Some(f) = failure {
            return Err(f);
        }
        iterated.map_err(|e| Failure::new(e.to_string()))?;
        self.out.push(b'}');
        Ok(())
    }

    fn key(&mut self, key: Value) -> Result<(), Failure> {
        if let Some(s) = RString::from_value(key) {
            return self.string(s);
        }
        if let Some(sym) = Symbol::from_value(key) {
            let name = sym
                .name()
                .map_err(|_| Failure::new("a Symbol key that is not UTF-8"))?;
            self.text(&name);
            return Ok(());
        }
        // SAFETY: copied at once.
        let class = unsafe { key.classname() }.into_owned();
        Err(Failure::new(format!(
            "a {class} hash key cannot become JSON (keys are Strings or Symbols)"
        )))
    }

    fn array(&mut self, array: RArray) -> Result<(), Failure> {
        self.out.push(b'[');
        for i in 0..array.len() {
            if i > 0 {
                self.out.push(b',');
            }
            let item: Value = array
                .entry(i as isize)
                .map_err(|e| Failure::new(e.to_string()))?;
            self.write(item).map_err(|f| f.at(Segment::Index(i)))?;
        }
        self.out.push(b']');
        Ok(())
    }
}

/// A written key as text, for the path of an error below it.
fn key_name(key: Value) -> String {
    match Symbol::from_value(key) {
        Some(sym) => sym.name().map(|n| n.into_owned()).unwrap_or_default(),
        // SAFETY: copied at once.
        None => RString::from_value(key)
            .map(|s| String::from_utf8_lossy(unsafe { s.as_slice() }).into_owned())
            .unwrap_or_default(),
    }
}
