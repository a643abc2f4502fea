//! JSON text ↔ Ruby objects, built directly: no `serde_json::Value` in between.
//!
//! JSON → Ruby is the reader of `tasker-ruby-json` (why it is a reader of its own: that
//! crate's documentation) with a builder of Ruby objects. Bignums stay exact and Hash
//! keys are interned frozen strings, so the keys repeated across a document exist once.
//!
//! Ruby → JSON writes into one buffer and names the path of anything that cannot become
//! JSON (`results.items[3].at: a Time cannot become JSON`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::value::{Qfalse, Qtrue};
use magnus::{Error, Fixnum, Float, RArray, RBignum, RHash, RString, Ruby, Symbol, Value};
use tasker_ruby_json::{Builder, ReadError};

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
    tasker_ruby_json::read(&mut RubyBuilder { ruby }, json, max_depth()).map_err(|e| match e {
        ReadError::Build(e) => e,
        ReadError::TooDeep { .. } => Error::new(
            errors::serialization(ruby),
            format!("{e} (Tasker.max_depth)"),
        ),
        ReadError::Syntax { .. } => Error::new(errors::serialization(ruby), e.to_string()),
    })
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

/// Builds the reader's values as Ruby objects, hash keys interned.
struct RubyBuilder<'r> {
    ruby: &'r Ruby,
}

impl Builder for RubyBuilder<'_> {
    type Value = Value;
    type Key = RString;
    type Object = RHash;
    type Array = RArray;
    type Error = Error;

    fn null(&mut self) -> Value {
        self.ruby.qnil().as_value()
    }

    fn boolean(&mut self, b: bool) -> Value {
        if b {
            self.ruby.qtrue().as_value()
        } else {
            self.ruby.qfalse().as_value()
        }
    }

    fn integer(&mut self, n: i64) -> Value {
        self.ruby.integer_from_i64(n).as_value()
    }

    fn big_integer(&mut self, digits: &str) -> Result<Value, Error> {
        // Ruby parses the digits into an exact bignum.
        self.ruby.str_new(digits).funcall("to_i", ())
    }

    fn float(&mut self, f: f64) -> Value {
        self.ruby.float_from_f64(f).as_value()
    }

    fn string(&mut self, s: &str) -> Value {
        self.ruby.str_new(s).as_value()
    }

    fn key(&mut self, s: &str) -> RString {
        interned(s)
    }

    fn object(&mut self) -> RHash {
        self.ruby.hash_new()
    }

    fn insert(&mut self, object: &mut RHash, key: RString, value: Value) -> Result<(), Error> {
        object.aset(key, value)
    }

    fn end_object(&mut self, object: RHash) -> Value {
        object.as_value()
    }

    fn array(&mut self) -> RArray {
        self.ruby.ary_new()
    }

    fn push(&mut self, array: &mut RArray, value: Value) -> Result<(), Error> {
        array.push(value)
    }

    fn end_array(&mut self, array: RArray) -> Value {
        array.as_value()
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
