//! The config YAML parser: never panics; hostile YAML is refused within bounds.
//! The logic is `gslb_state_core::fuzz::config`, which `core/tests/fuzz_corpus.rs` also replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb_state_core::fuzz::config(data);
});
