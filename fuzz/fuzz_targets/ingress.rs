//! libFuzzer entry point of the `ingress` target. The checks live in
//! `fuzz/src/targets/ingress.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::ingress::run(data));
