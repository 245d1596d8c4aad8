//! libFuzzer entry point of the `egress` target. The checks live in
//! `fuzz/src/targets/egress.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::egress::run(data));
