//! Names as frozen, interned Ruby strings: Ruby keeps one object per distinct text, so
//! a getter called again, or for another step of the same template, allocates nothing.

use std::os::raw::c_long;

use magnus::RString;
use magnus::rb_sys::FromRawValue;

/// The interned frozen UTF-8 string for `text`.
pub fn interned(text: &str) -> RString {
    // SAFETY: called with the GVL held (every caller is a Ruby method); Ruby copies
    // the bytes if the string is new and returns a live frozen String.
    unsafe {
        let value = rb_sys::rb_enc_interned_str(
            text.as_ptr().cast(),
            text.len() as c_long,
            rb_sys::rb_utf8_encoding(),
        );
        RString::from_value(magnus::Value::from_raw(value)).expect("Ruby returns a String")
    }
}
