//! Wire decoding: never panics; whatever decodes re-encodes to an equal message.
//! The logic is `gslb_state_core::fuzz::codec`, which `core/tests/fuzz_corpus.rs` also replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gslb_state_core::fuzz::codec(data));
