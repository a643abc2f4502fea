//! A template's canonical JSON is also YAML that reads as the same template: the stores
//! keep it and the API reads it back with [`super::parse_template`].

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// serde_json's compact output, but for the characters that YAML 1.1 refuses raw (DEL,
/// the C1 controls, U+FFFE, U+FFFF) or reads as a line break (U+0085, a C1 control):
/// those are written as `\u` escapes, which both read.
struct YamlSafe;

impl Formatter for YamlSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut run = 0;
        for (at, c) in fragment.char_indices() {
            if matches!(c, '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}') {
                writer.write_all(&fragment.as_bytes()[run..at])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                run = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[run..])
    }
}

/// `value` as JSON that YAML reads the same.
pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    let mut out = Vec::with_capacity(512);
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, YamlSafe,
        ))
        .expect("a template always serializes");
    String::from_utf8(out).expect("the formatter writes whole characters")
}
