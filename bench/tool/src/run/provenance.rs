//! What code a result comes from (bench/README.md, "Evidence that matches
//! the code"): the checked-out commit, what was uncommitted, and for each
//! binary its sha256 and the commit it says it was built from (its
//! `--version` ends in `(git COMMIT)`, `COMMIT` with `-dirty` when its
//! sources differed). A run under `bench/runs/` must name a clean commit
//! and binaries built from it ([`require_clean`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// `git ARGS` in `repo`, never rewriting the index (a plain `git status`
/// may refresh it, which would make cargo re-run build.rs).
fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git").arg("-C").arg(repo).arg("--no-optional-locks").args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// HEAD's full hash (`None` outside a checkout).
pub fn head(repo: &Path) -> Option<String> {
    git(repo, &["rev-parse", "--verify", "-q", "HEAD"]).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The full hash of `rev` (`None` when it names no commit).
pub fn resolve(repo: &Path, rev: &str) -> Option<String> {
    git(repo, &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")]).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Modified, staged and untracked files.
pub fn uncommitted(repo: &Path) -> Vec<String> {
    git(repo, &["status", "--porcelain", "--untracked-files=all"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.get(3..))
        .map(str::to_owned)
        .collect()
}

/// The commit `bin` says it was built from, or "not reported".
pub fn bin_commit(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    out.as_deref().and_then(parse_version_commit).unwrap_or_else(|| "not reported".into())
}

/// `... (git COMMIT)` → COMMIT (a 40-digit hash, `-dirty` allowed, or
/// `unknown`).
fn parse_version_commit(version: &str) -> Option<String> {
    let line = version.lines().next()?.trim_end();
    let inner = line.strip_suffix(')')?.rsplit_once("(git ")?.1;
    let hash = inner.strip_suffix("-dirty").unwrap_or(inner);
    let ok = inner == "unknown" || (hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| inner.to_owned())
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    Some(Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `dir` lies under `repo/bench/runs/`, where results are
/// committed as evidence.
pub fn under_runs(repo: &Path, dir: &Path) -> bool {
    let abs = |p: &Path| {
        let p = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
        normalize(&p)
    };
    abs(dir).starts_with(abs(&repo.join("bench/runs")))
}

/// `a/./b/../c` → `a/c`, without touching the file system (the
/// directory may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// For a result under `bench/runs/`: the checkout is clean and every
/// binary says it was built from HEAD without changes. `Err` lists every
/// problem.
pub fn require_clean(repo: &Path, bins: &[&Path]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let head = head(repo);
    if head.is_none() {
        problems.push(format!("{} is not a git checkout with a commit", repo.display()));
    }
    let dirty = uncommitted(repo);
    if !dirty.is_empty() {
        let shown: Vec<&str> = dirty.iter().take(8).map(String::as_str).collect();
        problems.push(format!("{} uncommitted file(s): {}", dirty.len(), shown.join(" ")));
    }
    for bin in bins {
        let built = bin_commit(bin);
        if built == "not reported" {
            problems.push(format!("{} does not say which commit it was built from (its --version lacks \"(git COMMIT)\")", bin.display()));
        } else if head.as_deref() != Some(built.as_str()) {
            problems.push(format!(
                "{} was built from '{built}', not from HEAD {} (rebuild: cargo build --release)",
                bin.display(),
                head.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// `key=value` lines recording the commit, the uncommitted files, and each
/// binary's sha256 and build commit (keys `<KEY>_sha256`, `<KEY>_build`;
/// "not found" when the binary is missing).
pub fn env_lines(repo: &Path, bins: &[(&str, &Path)]) -> Vec<(String, String)> {
    let files = uncommitted(repo);
    let mut v = vec![
        ("git_head".to_owned(), head(repo).unwrap_or_default()),
        ("git_dirty_files".to_owned(), files.len().to_string()),
        ("git_uncommitted".to_owned(), files.join(" ")),
    ];
    for (key, bin) in bins {
        match sha256_file(bin) {
            Some(sha) => {
                v.push((format!("{key}_sha256"), sha));
                v.push((format!("{key}_build"), bin_commit(bin)));
            }
            None => v.push((format!("{key}_sha256"), "not found".into())),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_name_their_commit() {
        let h = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(parse_version_commit(&format!("encapd 0.1.0 (git {h})\n")), Some(h.to_owned()));
        assert_eq!(parse_version_commit(&format!("encapd 0.1.0 (git {h}-dirty)")), Some(format!("{h}-dirty")));
        assert_eq!(parse_version_commit("encapd 0.1.0 (git unknown)"), Some("unknown".into()));
        assert_eq!(parse_version_commit("encapd 0.1.0"), None);
        assert_eq!(parse_version_commit("encapd (git 1234)"), None);
    }

    #[test]
    fn runs_directory_is_recognised_without_existing() {
        let repo = Path::new("/r");
        assert!(under_runs(repo, Path::new("/r/bench/runs/2026-01-01-0000-x")));
        assert!(under_runs(repo, Path::new("/r/bench/x/../runs/new")));
        assert!(!under_runs(repo, Path::new("/tmp/bench")));
        assert!(!under_runs(repo, Path::new("/r/bench/runsx")));
    }
}
