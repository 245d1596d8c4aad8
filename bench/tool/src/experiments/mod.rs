//! Experiments on the testbed, each an `encapd-bench` subcommand: where a
//! round trip waits (`trace-rtt`, `wakeups`), where the time of bulk TCP
//! goes (`profile`), whether encapd holds up for hours (`soak`), and how
//! fast the etcd control plane propagates (`etcd-propagation`). They bring
//! up their own benches ([`encapd_testbed::bed::Bed`]) and modes (the
//! registry), clean up on every exit path, and except `soak` (which
//! writes evidence, under the same rules as `run`) never write under
//! `bench/runs/`: their output goes to a directory of the caller's choice
//! or a temporary one.

mod counters;
pub mod etcd;
pub mod profile;
pub mod soak;
pub mod trace_rtt;
pub mod wakeups;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use encapd_testbed::bed::{Active, Bed};
use encapd_testbed::kernel_paths::UNDERLAY_MTU;
use encapd_testbed::mode::Mode;
use encapd_testbed::underlay::Underlay;

use crate::exec::{self, Background, argv};
use crate::run::{self, builds, info, panic_text};

/// The options every experiment on a bench shares.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The underlay profile: veth (TSO packets cross whole) or wire (MTU
    /// frames, GRO on receive).
    #[arg(long, default_value = "veth")]
    pub underlay: Underlay,
    /// Do not run `cargo build --release` first.
    #[arg(long)]
    pub no_build: bool,
}

/// What every experiment starts from: root, packages, the build, the
/// encapd binary.
pub struct Setup {
    pub repo: PathBuf,
    pub encapd: PathBuf,
}

/// Checks root, installs `pkgs` (scripts/lib.sh groups), builds unless
/// `no_build` (continuing in the rebuilt encapd-bench if the build
/// replaced it), and finds encapd ($ENCAPD, else the release build).
pub fn setup(pkgs: &[&str], no_build: bool) -> Result<Setup, String> {
    run::quiet_panics();
    if !run::is_root() {
        return Err("must run as root (network namespaces)".into());
    }
    let repo = run::repo_root()?;
    let mut all = pkgs.to_vec();
    if !no_build {
        all.push("@build");
    }
    run::need_packages(&repo, &all)?;
    if !no_build {
        builds::build_release(&repo)?;
        builds::reexec_if_rebuilt(&repo.join("target/release/encapd-bench"), &["--no-build"])?;
    }
    let encapd = std::env::var_os("ENCAPD").filter(|v| !v.is_empty()).map_or_else(|| repo.join("target/release/encapd"), PathBuf::from);
    exec::install_interrupt_handler().map_err(|e| format!("signal handlers: {e}"))?;
    Ok(Setup { repo, encapd })
}

/// What an experiment over a list of modes starts from.
pub struct Prepared {
    pub modes: Vec<Mode>,
    pub setup: Setup,
    /// Where its output goes, inside `tmp` unless the caller chose it.
    pub out: PathBuf,
    pub tmp: Option<encapd_testbed::cmd::TempDir>,
    pub bed: Bed,
}

/// Resolves `modes`, sets up (root, `pkgs`, the build), makes the output
/// directory (`out`, else a temporary one tagged `tag`) and brings up the
/// bench: in that order, so a typo in a mode name fails before anything
/// is installed or built.
pub fn prepare(modes_list: &str, bench: &BenchArgs, pkgs: &[&str], out: Option<PathBuf>, tag: &str) -> Result<Prepared, String> {
    let modes = modes(modes_list)?;
    let setup = setup(pkgs, bench.no_build)?;
    let (out, tmp) = out_dir(out, tag)?;
    let bed = bed(bench.underlay)?;
    Ok(Prepared { modes, setup, out, tmp, bed })
}

/// A bench on `underlay`, or why it did not come up.
pub fn bed(underlay: Underlay) -> Result<Bed, String> {
    info(&format!("bringing up the {underlay} bench"));
    catch_unwind(|| Bed::new(underlay)).map_err(|p| format!("the {underlay} bench did not come up: {}", panic_text(&p)))
}

/// Resolves a comma-separated list of registry modes.
pub fn modes(list: &str) -> Result<Vec<Mode>, String> {
    list.split(',').filter(|m| !m.is_empty()).map(|m| Mode::named(m).map_err(|e| e.to_string())).collect()
}

/// Enters `mode` on `bed` (configs in `dir`, `workers` workers, the
/// flannel-style container MTU).
pub fn enter<'b>(bed: &'b Bed, mode: &Mode, dir: &Path, encapd: &Path, workers: usize) -> Result<Active<'b>, String> {
    let entered = catch_unwind(AssertUnwindSafe(|| {
        let configs = bed.write_configs(mode, workers, dir);
        bed.enter(mode, &configs, encapd, mode.ctr_mtu(UNDERLAY_MTU))
    }));
    match entered {
        Ok(r) => r,
        Err(p) => Err(panic_text(&p)),
    }
}

/// The output directory: `out` (created), or a temporary one that is
/// removed at the end (returned as the guard).
pub fn out_dir(out: Option<PathBuf>, tag: &str) -> Result<(PathBuf, Option<encapd_testbed::cmd::TempDir>), String> {
    match out {
        Some(o) => {
            std::fs::create_dir_all(&o).map_err(|e| format!("{}: {e}", o.display()))?;
            Ok((o, None))
        }
        None => {
            let t = encapd_testbed::cmd::TempDir::new(tag);
            Ok((t.path().join("out"), Some(t))).and_then(|(p, t)| {
                std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                Ok((p, t))
            })
        }
    }
}

/// A sockperf server in `bed`'s ctrB on `port`, ready.
pub fn sockperf_server(bed: &Bed, port: u16, log: &Path) -> Result<Background, String> {
    let ns = bed.ctr_ns(encapd_testbed::wiring::Node::B);
    let server =
        Background::start(Some(ns), &argv(&["sockperf", "server", "-i", encapd_testbed::wiring::CTR_B, "-p", &port.to_string()]), log)
            .map_err(|e| format!("sockperf server: {e}"))?;
    if !exec::wait_port(ns, port, true, Duration::from_secs(5)) {
        return Err("sockperf server did not start".into());
    }
    Ok(server)
}

/// Every thread id of the processes `pids`.
pub fn tids_of(pids: &[i32]) -> Vec<u32> {
    let mut v = Vec::new();
    for pid in pids {
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            v.extend(rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()));
        }
    }
    v
}

/// The median of `v` (the mean of the middle two for an even count); NaN
/// when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
