//! libFuzzer entry point of the `icmp` target. The checks live in
//! `fuzz/src/targets/icmp.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::icmp::run(data));
