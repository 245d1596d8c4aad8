//! The binaries a run uses: the workspace's release build (`cargo build
//! --release`, which builds encapd and encapd-bench), and a baseline
//! encapd built from another revision in a temporary clean worktree, kept
//! in `target/baseline/<commit>/` for later runs.
//!
//! When the build replaced the running encapd-bench, the run continues in
//! the new binary ([`reexec_if_rebuilt`]): the provenance of a run names
//! the harness that ran it, and a stale one must not record a newer
//! binary's sha256.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::provenance::{resolve, sha256_file};

/// Finds `cargo` on PATH, else where rustup puts it (sudo resets PATH).
fn cargo() -> PathBuf {
    if Command::new("cargo").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("cargo");
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"));
    [home.join("bin/cargo"), PathBuf::from("/root/.cargo/bin/cargo"), PathBuf::from("/usr/local/cargo/bin/cargo")]
        .into_iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// `cargo build --release` in `repo` (the workspace's default members).
pub fn build_release(repo: &Path) -> Result<(), String> {
    eprintln!("[encapd-bench] building: cargo build --release");
    let st = Command::new(cargo()).args(["build", "--release"]).current_dir(repo).status().map_err(|e| format!("cargo: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("cargo build --release failed ({st})")) }
}

/// If `built` (the encapd-bench the build just wrote) differs from the
/// running binary, replaces this process with it, same arguments plus
/// `extra` (e.g. `--no-build`). Returns only when nothing changed (or the
/// exec failed, which is an error).
pub fn reexec_if_rebuilt(built: &Path, extra: &[&str]) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if !built.is_file() || sha256_file(&me) == sha256_file(built) {
        return Ok(());
    }
    eprintln!("[encapd-bench] the build replaced encapd-bench: continuing in {}", built.display());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let err = Command::new(built).args(&args).args(extra).exec();
    Err(format!("exec {}: {err}", built.display()))
}

/// Builds encapd from `rev` in a temporary clean worktree into
/// `repo/target/baseline/<commit>/` (reused when present); returns
/// (commit, binary).
pub fn build_baseline(repo: &Path, rev: &str) -> Result<(String, PathBuf), String> {
    let commit = resolve(repo, rev).ok_or_else(|| format!("--baseline: '{rev}' is not a commit of {}", repo.display()))?;
    let dir = repo.join("target/baseline").join(&commit);
    let bin = dir.join("release/encapd");
    if bin.is_file() {
        return Ok((commit, bin));
    }
    let wt = Worktree::add(repo, &commit)?;
    eprintln!("[encapd-bench] building the baseline {commit}: cargo build --release --locked --bin encapd (target {})", dir.display());
    let st = Command::new(cargo())
        .args(["build", "--release", "--locked", "--bin", "encapd"])
        .env("CARGO_TARGET_DIR", &dir)
        .current_dir(wt.path())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    drop(wt);
    if !st.success() {
        return Err(format!("--baseline: building {commit} failed ({st})"));
    }
    if !bin.is_file() {
        return Err(format!("--baseline: no {} after the build", bin.display()));
    }
    Ok((commit, bin))
}

/// A detached worktree of `repo` at a commit in a temporary directory,
/// removed (`git worktree remove --force`) when dropped.
pub struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Worktree {
    pub fn add(repo: &Path, commit: &str) -> Result<Worktree, String> {
        let path = std::env::temp_dir().join(format!("encapd-worktree-{}-{}", std::process::id(), &commit[..commit.len().min(12)]));
        let o = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["worktree", "add", "--detach", "-q"])
            .arg(&path)
            .arg(commit)
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if !o.status.success() {
            return Err(format!("git worktree add {commit}: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(Worktree { repo: repo.to_owned(), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "remove", "--force"])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("[encapd-bench] warning: could not remove the worktree {} (git worktree prune)", self.path.display());
        }
    }
}
