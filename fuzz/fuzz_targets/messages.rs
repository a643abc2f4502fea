//! Every wire message decoder, chosen by the first byte: a message body decodes or is
//! refused (a dead letter), never a panic; what decodes encodes, and decodes again to
//! the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasker_core::encode::EncodeBuffer;
use tasker_core::message::{ExecutionMessage, StepMessage, TaskStart};

/// Decodes `text` as `$ty`; if it decodes, checks that its encoding is stable.
macro_rules! round_trip {
    ($text:expr, $ty:ty) => {{
        let Ok(message) = serde_json::from_str::<$ty>($text) else {
            return;
        };
        let mut buffer = EncodeBuffer::default();
        let encoded = buffer.encode(&message).to_owned();
        let again: $ty = serde_json::from_str(&encoded)
            .unwrap_or_else(|e| panic!("{encoded} does not decode: {e}"));
        assert_eq!(buffer.encode(&again), encoded, "the encoding changed");
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // Queue messages are text; the stores hand the decoders a `&str`.
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    match selector % 3 {
        0 => round_trip!(text, TaskStart),
        1 => round_trip!(text, StepMessage),
        _ => round_trip!(text, ExecutionMessage<'_>),
    }
});
