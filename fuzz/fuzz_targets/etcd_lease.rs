//! libFuzzer entry point of the `etcd_lease` target. The checks live in
//! `fuzz/src/targets/etcd_lease.rs`, so that `cargo test` can replay the
//! committed inputs through them without libFuzzer (`fuzz/tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encapd_fuzz::targets::etcd_lease::run(data));
