//! libFuzzer entry point of the `wg_messages` target. The checks live in
//! `fuzz/src/targets/wg_messages.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::wg_messages::run(data));
