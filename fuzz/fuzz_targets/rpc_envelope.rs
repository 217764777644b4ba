//! The canonical-envelope scanner against the loose path it stands in
//! front of (`rpc::parse` against `rpc::parse_reference`).
//!
//! Input: the first byte picks the depth bound (so the depth check before
//! parsing is crossed both ways); the rest, decoded lossily, is one text
//! frame. Checked: the frame gets the same result with and without the
//! scanner (the `Debug` of everything parsed: the call, the ids and params
//! as the exact bytes sent, every error and its message), and whenever the
//! scanner takes a frame alone, the reference reads it as that same call or
//! provider's answer.

#![no_main]

use adjunct_gateway::rpc::{self, Bounds, Incoming};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let bounds = Bounds {
        max_batch: 8,
        max_depth: [2, 3, 8, 32, 1000][usize::from(pick) % 5],
    };
    let text = String::from_utf8_lossy(rest);
    let reference = format!("{:?}", rpc::parse_reference(&text, bounds));
    assert_eq!(
        format!("{:?}", rpc::parse(&text, bounds)),
        reference,
        "the scanner changed the result of {text:?}"
    );
    if let Some(item) = rpc::scan_canonical(&text) {
        // The depth check comes before any parsing; past it, the call.
        if !matches!(rpc::parse_reference(&text, bounds), Incoming::Unusable(_)) {
            assert_eq!(
                format!("{:?}", Incoming::Single(Ok(item))),
                reference,
                "the scanner read {text:?} differently"
            );
        }
    }
});
