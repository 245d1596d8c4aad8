//! libFuzzer entry point of the `offload_coalesce` target. The checks live in
//! `fuzz/src/targets/offload_coalesce.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::offload_coalesce::run(data));
