//! The `gslb-sim` scenario parser: never panics; what it accepts is consistent and runs.
//! The logic is `gslb_state_sim::fuzz::scenario`, which the crate's tests also replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gslb_state_sim::fuzz::scenario(data);
});
