//! Build script of encapd, shared with encapd-bench (`bench/tool/build.rs`
//! includes this file): it tells the binary which commit it is built from,
//! as the compile-time variable `ENCAPD_GIT_COMMIT`, for `--version` and
//! for `encapd-bench run`, which refuses to record a run under `bench/runs/`
//! with a binary not built from the checked-out commit.
//!
//! The value is the full commit hash, with `-dirty` appended when an input
//! of the binary differs from that commit (modified, staged or untracked),
//! or `unknown` outside a git checkout (a source tarball, no `git`, or a
//! tree inside a repository whose top level tracks no `Cargo.toml`).
//!
//! The inputs of a binary are its package's `src/`, `build.rs` and
//! `Cargo.toml`, and the workspace's `Cargo.toml`, `Cargo.lock` and this
//! file. Cargo re-runs the script when any of them changes, when HEAD moves
//! (commit, checkout, reset: `HEAD` and the branch's ref, loose or packed)
//! and when the index changes (add, commit); so the value is never older
//! than the code compiled with it. The dirty check looks at exactly those
//! inputs: an edit elsewhere (README, tests) does not make the binary
//! "dirty", and nothing outside the watched files can change the answer
//! without cargo noticing. In a worktree `.git` is a file, so the git
//! directories are asked from git itself, not derived from `.git`.
//!
//! For the `encapd` package it also compiles the kernel path's eBPF
//! programs (`src/datapath/kernel/bpf/encapd.bpf.c`) with clang into
//! `$OUT_DIR/encapd.bpf.o`, which the daemon embeds and loads with aya
//! (docs/kernel-path-source.md). BTF and line info are kept (`-g`), so
//! `bpftool prog dump xlated linum` shows the C source; paths are made
//! relative to the package, so the object does not depend on where the
//! tree was checked out. Without clang, or without the headers of
//! `libbpf-dev` and `linux-libc-dev`, the build stops with the Debian
//! package to install (`scripts/lib.sh` lists them under `@build`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let package = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit = match Checkout::find(&package) {
        Some(checkout) => {
            let inputs = checkout.inputs(&package);
            for path in checkout.git_files().iter().chain(&inputs) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            checkout.describe(&inputs).unwrap_or_else(|| "unknown".into())
        }
        None => {
            // Not a checkout: nothing changes the answer short of the tree
            // becoming one; watch the manifest (an absolute path: the
            // script's own path differs between the packages sharing it).
            println!("cargo:rerun-if-changed={}", package.join("Cargo.toml").display());
            "unknown".into()
        }
    };
    println!("cargo:rustc-env=ENCAPD_GIT_COMMIT={commit}");
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("encapd") {
        compile_bpf(&package);
    }
}

/// Compiles the kernel path's eBPF object, or stops the build saying what
/// is missing.
fn compile_bpf(package: &Path) {
    let dir = package.join("src/datapath/kernel/bpf");
    for f in ["encapd.bpf.c", "encapd.h"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=ENCAPD_CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("encapd.bpf.o");
    let clang = std::env::var("ENCAPD_CLANG").unwrap_or_else(|_| "clang".into());
    // The uapi headers' <asm/types.h> lives under the host's multiarch
    // directory (linux-libc-dev), which a BPF target does not search.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("encapd's kernel path: no multiarch include directory known for {other}"),
    };
    for (header, package) in [("/usr/include/bpf/bpf_helpers.h", "libbpf-dev"), ("/usr/include/linux/bpf.h", "linux-libc-dev")] {
        if !Path::new(header).exists() {
            panic!("encapd's kernel path needs {header}: install the Debian package {package} (scripts/lib.sh, @build)");
        }
    }
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-std=gnu11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg(format!("-fdebug-prefix-map={}=.", package.display()))
        .arg("-c")
        .arg(dir.join("encapd.bpf.c"))
        .arg("-o")
        .arg(&out)
        .current_dir(package)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("compiling src/datapath/kernel/bpf/encapd.bpf.c with {clang} failed ({s})"),
        Err(e) => {
            panic!("encapd's kernel path is compiled with clang ({clang}: {e}): install the Debian package clang (scripts/lib.sh, @build)")
        }
    }
}

/// The git checkout (work tree) that holds the package.
struct Checkout {
    top: PathBuf,
}

impl Checkout {
    /// The checkout, if `package` lies in one whose top level holds a
    /// tracked `Cargo.toml` (the workspace's): a source tree unpacked inside
    /// some unrelated repository does not report that repository's commit.
    fn find(package: &Path) -> Option<Checkout> {
        let top = PathBuf::from(git(package, &["rev-parse", "--show-toplevel"])?);
        git(&top, &["ls-files", "--error-unmatch", "--", "Cargo.toml"])?;
        Some(Checkout { top })
    }

    /// The files and directories the binary is built from, as they exist.
    fn inputs(&self, package: &Path) -> Vec<PathBuf> {
        let mut paths = vec![package.join("src"), package.join("build.rs"), package.join("Cargo.toml")];
        for p in ["Cargo.toml", "Cargo.lock", "build.rs"] {
            paths.push(self.top.join(p));
        }
        paths.sort();
        paths.dedup();
        paths.retain(|p| p.exists());
        paths
    }

    /// Git's own files whose change can move HEAD or change the index:
    /// the per-worktree `HEAD` and `index`, the branch's loose ref and the
    /// packed refs (shared by all worktrees).
    fn git_files(&self) -> Vec<PathBuf> {
        let dir = |which: &str| git(&self.top, &["rev-parse", "--path-format=absolute", which]).map(PathBuf::from);
        let mut files = Vec::new();
        if let Some(git_dir) = dir("--git-dir") {
            files.extend([git_dir.join("HEAD"), git_dir.join("index")]);
        }
        if let Some(common) = dir("--git-common-dir") {
            files.push(common.join("packed-refs"));
            if let Some(branch) = git(&self.top, &["symbolic-ref", "-q", "HEAD"]) {
                files.push(common.join(branch));
            }
        }
        // A path that does not exist would make cargo re-run every time.
        files.retain(|p| p.exists());
        files
    }

    /// `<commit>` or `<commit>-dirty` (None: no commit yet).
    fn describe(&self, inputs: &[PathBuf]) -> Option<String> {
        let head = git(&self.top, &["rev-parse", "--verify", "-q", "HEAD"])?;
        let mut args = vec!["--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--"];
        let specs: Vec<String> = inputs.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        args.extend(specs.iter().map(String::as_str));
        // --no-optional-locks: status must not rewrite the index, which
        // would make cargo re-run this script on the next build.
        let changes = git(&self.top, &args)?;
        Some(if changes.is_empty() { head } else { format!("{head}-dirty") })
    }
}

/// Runs git in `dir`; its trimmed stdout, or None when it fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
