//! What a test may assume about the machine: the `encapd` binary under
//! test, and whether root-only tests can run here. A root-only test that
//! cannot run prints "skipped: ..." and passes, unless
//! `ENCAPD_REQUIRE_ROOT_TESTS=1` (what CI sets) makes the skip a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The `encapd` binary under test: `$ENCAPD_BIN` if set (e.g. the release
/// build), else the one cargo built beside the running test or benchmark
/// executable. Cargo puts an integration test in `target/<profile>/deps/`
/// and the package's binaries in `target/<profile>/`, and builds them
/// before it runs the test; a library crate has no `CARGO_BIN_EXE_*`, so
/// the path is found from the running executable.
pub fn encapd_bin() -> PathBuf {
    match std::env::var_os("ENCAPD_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => sibling_binary("encapd"),
    }
}

/// The `encapd` binary under test, at a path every user can execute: a
/// daemon that switches to another user (`[process] user = "nobody"`)
/// re-executes its own file on a takeover, as that user. A checkout in a
/// private directory (`mktemp -d` makes one, mode 0700) hides the build
/// from that user, so then the binary is copied into `dir` (which must be
/// traversable by everyone) with mode 0755; otherwise it is used where it
/// is.
pub fn encapd_bin_any_user_can_run(dir: &Path) -> PathBuf {
    let bin = encapd_bin();
    if any_user_can_execute(&bin) {
        return bin;
    }
    let copy = dir.join("encapd");
    std::fs::copy(&bin, &copy).unwrap_or_else(|e| panic!("copying {} to {}: {e}", bin.display(), copy.display()));
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("chmod {}: {e}", copy.display()));
    copy
}

/// True when "others" may execute `path` and search every directory above it.
fn any_user_can_execute(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    let others_x = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    others_x(&path) && path.ancestors().skip(1).all(others_x)
}

/// `name` in the cargo profile directory of the running executable
/// (`target/<profile>/name`, whether we run from `deps/` or beside it).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    let mut dir = exe.parent().expect("the executable's directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir.join(name)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when the caller may run a root-only test. Otherwise prints
/// "skipped: ..." and returns false, or panics when
/// `ENCAPD_REQUIRE_ROOT_TESTS=1` demands that root tests really run.
pub fn require_root() -> bool {
    if !is_root() {
        return skip_or_fail("needs root");
    }
    require_tools(&["ip", "ping", "sysctl"])
}

/// True when every program in `tools` is in PATH. Otherwise prints
/// "skipped: ..." and returns false, or panics when
/// `ENCAPD_REQUIRE_ROOT_TESTS=1` (scripts/test.sh installs them).
pub fn require_tools(tools: &[&str]) -> bool {
    for tool in tools {
        if !in_path(tool) {
            return skip_or_fail(&format!("needs `{tool}` in PATH"));
        }
    }
    true
}

/// Prints "skipped: WHY" and returns false, or panics when
/// `ENCAPD_REQUIRE_ROOT_TESTS=1` demands that the test really run.
pub fn skip_or_fail(why: &str) -> bool {
    if std::env::var("ENCAPD_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("root-only test skipped but ENCAPD_REQUIRE_ROOT_TESTS=1 ({why})");
    }
    eprintln!("skipped: {why}");
    false
}

/// True when `tool` is a file in one of `$PATH`'s directories.
pub fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file())).unwrap_or(false)
}
