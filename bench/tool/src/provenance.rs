//! Where a result came from: the checkout's commit and uncommitted files,
//! each binary's SHA-256 and the commit it says it was built from, the
//! machine and its load; and the rule for results committed as evidence:
//! under `bench/runs/` only from a clean checkout with binaries built from
//! HEAD (bench/README.md). The `key=value` lines are those `env.txt` has
//! always held.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The repository around the current directory (git's top level).
pub fn repo_root() -> Option<PathBuf> {
    let o = Command::new("git").args(["rev-parse", "--show-toplevel"]).output().ok()?;
    o.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// HEAD's full hash, if this is a checkout with a commit.
pub fn git_head() -> Option<String> {
    git(&["rev-parse", "HEAD"]).map(|s| s.trim().to_owned())
}

/// Modified, staged and untracked files.
pub fn git_uncommitted() -> Vec<String> {
    git(&["status", "--porcelain", "--untracked-files=all"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.get(3..))
        .map(str::to_owned)
        .collect()
}

/// The commit `bin` says it was built from: its `--version` line ends in
/// `(git COMMIT)` (build.rs); `None` when it does not say.
pub fn bin_commit(bin: &Path) -> Option<String> {
    let o = Command::new(bin).arg("--version").output().ok()?;
    let line = String::from_utf8_lossy(&o.stdout).lines().next()?.to_owned();
    let inner = line.strip_suffix(')')?.rsplit_once("(git ")?.1;
    Some(inner.to_owned())
}

/// True when `dir` lies under this checkout's `bench/runs/`.
pub fn under_runs(dir: &Path) -> Result<bool> {
    let Some(root) = repo_root() else { return Ok(false) };
    let runs = root.join("bench/runs");
    let abs = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    let runs = std::fs::canonicalize(&runs).unwrap_or(runs);
    // The directory may not exist yet: compare its nearest existing parent.
    let mut probe = abs.clone();
    let mut rest = Vec::new();
    while !probe.exists() {
        let Some(name) = probe.file_name() else { break };
        rest.push(name.to_owned());
        probe.pop();
    }
    let mut resolved = std::fs::canonicalize(&probe).unwrap_or(probe);
    resolved.extend(rest.iter().rev());
    Ok(resolved.starts_with(&runs) && resolved != runs)
}

/// For a result written under `bench/runs/`: the checkout is clean and
/// every binary says it was built from HEAD. Otherwise an error naming
/// each problem.
pub fn require_clean(bins: &[(&str, PathBuf)]) -> Result<()> {
    let mut problems = Vec::new();
    let head = git_head();
    if head.is_none() {
        problems.push("not a git checkout with a commit".to_owned());
    }
    let dirty = git_uncommitted();
    if !dirty.is_empty() {
        problems.push(format!("{} uncommitted file(s): {}", dirty.len(), dirty.iter().take(8).cloned().collect::<Vec<_>>().join(" ")));
    }
    for (_, bin) in bins {
        match bin_commit(bin) {
            None => problems.push(format!("{} does not say which commit it was built from", bin.display())),
            Some(b) if Some(&b) != head.as_ref() => {
                problems.push(format!("{} was built from '{b}', not from HEAD (rebuild: cargo build --release)", bin.display()))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "refusing to write under bench/runs/: a committed result must name a clean commit and binaries built from it ({}); \
         commit and rebuild, or write an experiment elsewhere with --out /tmp/DIR",
        problems.join("; ")
    )
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect())
}

/// The first line `program args` prints (stdout), or "unknown".
pub fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The current UTC time, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

/// `key=value` lines: the commit, the uncommitted files, each binary's
/// sha256 and build commit (`<key>_sha256`, `<key>_build`), the kernel,
/// CPU, core count, host and the load now (`loadavg_start`).
pub fn env_lines(bins: &[(&str, PathBuf)]) -> Vec<String> {
    let files = git_uncommitted();
    let mut lines = vec![
        format!("git_head={}", git_head().unwrap_or_default()),
        format!("git_dirty_files={}", files.len()),
        format!("git_uncommitted={}", files.join(" ")),
    ];
    for (key, bin) in bins {
        match sha256_file(bin) {
            Ok(h) => {
                lines.push(format!("{key}_sha256={h}"));
                lines.push(format!("{key}_build={}", bin_commit(bin).unwrap_or_else(|| "not reported".into())));
                lines.push(format!("{key}={}", first_line(&bin.to_string_lossy(), &["--version"])));
            }
            Err(_) => lines.push(format!("{key}_sha256=not found")),
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(": ")).map(|(_, v)| v.to_owned())))
        .unwrap_or_default();
    lines.extend([
        format!("kernel={}", first_line("uname", &["-r"])),
        format!("cpu={cpu}"),
        format!("nproc={}", std::thread::available_parallelism().map_or(0, |n| n.get())),
        format!("host={}", first_line("hostname", &[])),
        format!("loadavg_start={}", loadavg()),
    ]);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_outside_the_runs_is_not_under_them() {
        assert!(!under_runs(Path::new("/tmp/encapd-experiment")).unwrap());
        if let Some(root) = repo_root() {
            assert!(under_runs(&root.join("bench/runs/2099-01-01-not-there")).unwrap());
            assert!(!under_runs(&root.join("bench/runs")).unwrap());
        }
    }
}
