//! The README's performance figures are the newest committed full run's
//! (bench/README.md defines that run): the block between
//! `<!-- perf:begin -->` and `<!-- perf:end -->` must be exactly what
//! `encapd-bench readme` renders from it. And committed runs are evidence:
//! none may be deleted or moved once this rule exists (a newer run
//! supersedes an older one; both stay).

use std::path::{Path, PathBuf};
use std::process::Command;

use encapd_bench::report::readme;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn readme_quotes_the_newest_committed_full_run() {
    let repo = repo();
    let run = readme::newest_committed_run(&repo).unwrap_or_else(|e| panic!("{e}"));
    let want = readme::block(&repo, &run).unwrap_or_else(|e| panic!("render {}: {e}", run.display()));
    let text = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let got = readme::extract(&text).expect("README.md has no <!-- perf:begin --> ... <!-- perf:end --> block");
    if got != want {
        let line = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "README.md's performance block is not what {} renders (first difference at block line {}):\n  README:    {:?}\n  generated: {:?}\n\
             Regenerate it with `target/release/encapd-bench readme --update README.md` (from the repository root).",
            run.display(),
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo()).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A path inside a dated run directory (`bench/runs/YYYY-MM-DD-HHMM-*/`).
fn in_dated_run(path: &str) -> bool {
    path.strip_prefix("bench/runs/").and_then(|rest| rest.split_once('/')).is_some_and(|(dir, _)| {
        let b = dir.as_bytes();
        b.len() > 16 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[15] == b'-'
    })
}

/// Since the commit that added this test, no commit and no uncommitted
/// change deletes (or renames away) a file of a dated run. Skipped outside
/// a git checkout, and in a shallow clone that lacks that commit.
#[test]
fn committed_runs_are_never_deleted() {
    let Some(added) = git(&["log", "--diff-filter=A", "--format=%H", "--", "bench/tool/tests/readme_perf.rs"]) else {
        eprintln!("not a git checkout: skipped");
        return;
    };
    let mut deleted: Vec<String> = Vec::new();
    if let Some(first) = added.lines().last() {
        let Some(log) =
            git(&["log", "--no-renames", "--diff-filter=D", "--name-only", "--format=", &format!("{first}..HEAD"), "--", "bench/runs"])
        else {
            eprintln!("history from {first} not available (shallow clone?): skipped");
            return;
        };
        deleted.extend(log.lines().filter(|l| in_dated_run(l)).map(|l| format!("{l} (committed)")));
    }
    let pending = git(&["diff", "HEAD", "--no-renames", "--diff-filter=D", "--name-only", "--", "bench/runs"]).unwrap_or_default();
    deleted.extend(pending.lines().filter(|l| in_dated_run(l)).map(|l| format!("{l} (uncommitted)")));
    assert!(deleted.is_empty(), "benchmark runs are evidence and stay; a newer run supersedes them. Deleted:\n{}", deleted.join("\n"));
}
