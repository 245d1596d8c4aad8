//! libFuzzer entry point of the `peers_file` target. The checks live in
//! `fuzz/src/targets/peers_file.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::peers_file::run(data));
