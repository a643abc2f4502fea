//! Every wire message decoder, chosen by the first byte: a message body decodes or is
//! refused (a dead letter), never a panic; what decodes encodes, and decodes again to
//! the same text, borrowed and owned forms alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasker_core::intern::Interner;
use tasker_core::message::{
    EncodeBuffer, ExecutionMessage, StepMessage, StepResult, TaskRequest, TaskStart,
};

/// Decodes `text` as `$ty`; if it decodes, checks that its encoding is stable, and that
/// `$owned` (the owned form's encoding, when the type has one) equals it.
macro_rules! round_trip {
    ($text:expr, $ty:ty $(, |$m:ident, $interner:ident| $owned:expr)?) => {{
        let Ok(message) = serde_json::from_str::<$ty>($text) else {
            return;
        };
        let mut buffer = EncodeBuffer::default();
        let encoded = buffer.encode(&message).to_owned();
        let again: $ty = serde_json::from_str(&encoded)
            .unwrap_or_else(|e| panic!("{encoded} does not decode: {e}"));
        assert_eq!(buffer.encode(&again), encoded, "the encoding changed");
        $(
            let $interner = Interner::new(1 << 16);
            let $m = &again;
            assert_eq!(buffer.encode(&$owned), encoded, "the owned form differs");
        )?
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
    match selector % 5 {
        0 => round_trip!(text, TaskStart),
        1 => round_trip!(text, StepMessage<'_>, |m, i| m.to_owned_in(&i).view()),
        2 => round_trip!(text, StepResult<'_>, |m, i| m.to_owned_in(&i).view()),
        3 => round_trip!(text, TaskRequest<'_>, |m, i| m.to_owned_in(&i).view()),
        _ => round_trip!(text, ExecutionMessage<'_>),
    }
});
