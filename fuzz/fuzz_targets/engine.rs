//! The policy engine against the reference model: any divergence or panic is a crash.
//! The logic is `gslb_state_core::fuzz::engine`, which `core/tests/fuzz_corpus.rs` also replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gslb_state_core::fuzz::engine(data));
