//! Replays the committed fuzz inputs through the targets' checks, without
//! libFuzzer, as part of the workspace's `cargo test` (so CI needs neither
//! cargo-fuzz nor a sanitizer build):
//! - every finding in `regressions/` (`TARGET-description.bin`) must pass
//!   now that it is fixed;
//! - every seed in `corpus/TARGET/` must pass too (they are valid inputs the
//!   fuzzers start from; a failing seed is a finding).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use encapd_fuzz::targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The regular, non-hidden files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Runs `input` through `target`; Err(panic message) on a finding.
fn replay(target: fn(&[u8]), input: &Path) -> Result<(), String> {
    let data = std::fs::read(input).unwrap();
    catch_unwind(AssertUnwindSafe(|| target(&data)))
        .map_err(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
}

#[test]
fn committed_findings_stay_fixed() {
    let inputs = files(&fuzz_dir().join("regressions"));
    assert!(!inputs.is_empty(), "no inputs in fuzz/regressions/");
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let target = name.split('-').next().unwrap();
        let run = targets::by_name(target).unwrap_or_else(|| panic!("{name}: no fuzz target named {target:?}"));
        if let Err(msg) = replay(run, input) {
            failures.push(format!("{name}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} committed findings fail again:\n{}", failures.len(), inputs.len(), failures.join("\n"));
    eprintln!("{} committed findings replayed, all pass", inputs.len());
}

#[test]
fn seed_corpora_pass() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, run) in targets::ALL {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in &seeds {
            count += 1;
            if let Err(msg) = replay(run, seed) {
                failures.push(format!("{target} {}: {msg}", seed.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} seeds fail:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{count} seeds replayed, all pass");
}
