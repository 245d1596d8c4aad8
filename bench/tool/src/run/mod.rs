//! `encapd-bench run`: encapd against plain routing and kernel VXLAN, and
//! against its own engines and settings, side by side in one run, on both
//! underlay profiles (bench/README.md says what each test measures and how
//! each profile is made).
//!
//! The run: for every repetition, every mode on every profile (and with
//! `--old-harness REV` every mode by the old shell harness too), in the
//! listed order in odd repetitions and in reverse in even ones, so that
//! no mode always runs right after the same other one; each on a bench
//! ([`encapd_testbed::bed::Bed`]) per profile that lives for the whole
//! run. Results go to `results.csv` as they are measured.
//!
//! Provenance: a run under `bench/runs/` only from a clean checkout whose
//! binaries say they were built from HEAD (checked before anything runs).
//!
//! Exit status ([`ExitStatus`]): 0 when every mode came up and every test
//! produced a value; 3 when the run completed but a setup failed or a
//! test recorded `NA` (everything is still written); 1 when it cannot run
//! at all; 2 on usage errors; 130 when interrupted.

pub mod baseline;
pub mod builds;
pub mod carried;
pub mod meta;
pub mod old_harness;
pub mod parse;
pub mod procfs;
pub mod provenance;
pub mod record;
pub mod suite;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use encapd_testbed::bed::Bed;
use encapd_testbed::kernel_paths::UNDERLAY_MTU;
use encapd_testbed::mode::{Build, Mode};
use encapd_testbed::underlay::Underlay;
use encapd_testbed::wg_peer::WgImpl;
use encapd_testbed::wiring::Node;

use crate::clock::Utc;
use crate::exec::{self, argv, interrupted, run_capture};
use old_harness::{OLD_SUFFIX, OldHarness};
use record::{Cell, CommandLog, Results};
use suite::{Durations, Suite, Target};

/// A warning line on stderr.
pub fn warn(msg: &str) {
    eprintln!("[{}] WARNING: {msg}", Utc::now().hms());
}

/// A progress line on stderr.
pub fn info(msg: &str) {
    eprintln!("[{}] {msg}", Utc::now().hms());
}

/// How `encapd-bench run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Complete = 0,
    CannotRun = 1,
    Usage = 2,
    Incomplete = 3,
    Interrupted = 130,
}

/// `encapd-bench run`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// 1 repetition (unless --reps), short tests: TCP 2 s, UDP 1 s, latency 1 s per load.
    #[arg(long)]
    pub quick: bool,
    /// Shortest tests (1 s each), for a CI-sized check.
    #[arg(long)]
    pub short: bool,
    /// Repetitions (default 3; 1 with --quick).
    #[arg(long, value_name = "N")]
    pub reps: Option<u32>,
    /// Comma-separated modes (`encapd-bench modes` lists them; default: the default run's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Comma-separated underlay profiles, each mode runs on each.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "veth,wire")]
    pub underlay: Vec<Underlay>,
    /// Result directory (default bench/runs/<UTC YYYY-MM-DD-HHMM>-<host>; there only from a
    /// clean checkout with binaries built from HEAD).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// encapd [dataplane] workers.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
    /// This container MTU in every mode instead of the flannel-style per-backend MTU.
    #[arg(long, value_name = "N")]
    pub ctr_mtu: Option<u32>,
    /// Do not run `cargo build --release` first ($ENCAPD selects another encapd binary).
    #[arg(long)]
    pub no_build: bool,
    /// Also run a sockperf UDP ping-pong per mode.
    #[arg(long)]
    pub sockperf: bool,
    /// First wait up to this many seconds for the 1-minute load average to drop below 1.0.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait_quiet: u64,
    /// Also run encapd as built from git revision REV, as modes NAME-base (default modes then:
    /// vxlan-kernel mmsg-base mmsg uring-base uring).
    #[arg(long, value_name = "REV")]
    pub baseline: Option<String>,
    /// Also run every mode with the old shell harness, bench/run.sh of REV, as modes NAME-old
    /// (veth only), interleaved with the new harness's run of the mode.
    #[arg(long, value_name = "REV")]
    pub old_harness: Option<String>,
}

/// The options, validated.
struct Config {
    modes: Vec<Mode>,
    underlays: Vec<Underlay>,
    reps: u32,
    quick: bool,
    short: bool,
    t: Durations,
    workers: usize,
    ctr_mtu: Option<u32>,
    build: bool,
    sockperf: bool,
    wait_quiet: u64,
    baseline: Option<String>,
    old_harness: Option<String>,
    out: Option<PathBuf>,
    invocation: String,
}

impl Config {
    fn from_args(a: RunArgs) -> Result<Config, String> {
        let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 });
        if reps == 0 {
            return Err("--reps must be a positive integer".into());
        }
        if a.workers == 0 {
            return Err("--workers must be a positive integer".into());
        }
        if a.ctr_mtu.is_some_and(|m| !(576..=UNDERLAY_MTU).contains(&m)) {
            return Err(format!("--ctr-mtu must be 576-{UNDERLAY_MTU}"));
        }
        let mut underlays: Vec<Underlay> = Vec::new();
        for u in a.underlay {
            if !underlays.contains(&u) {
                underlays.push(u);
            }
        }
        if underlays.is_empty() {
            return Err("--underlay names no profile".into());
        }
        let names: Vec<String> = if !a.modes.is_empty() {
            a.modes.iter().filter(|m| !m.is_empty()).cloned().collect()
        } else if a.baseline.is_some() {
            ["vxlan-kernel", "mmsg-base", "mmsg", "uring-base", "uring"].map(String::from).to_vec()
        } else {
            Mode::defaults().into_iter().map(|m| m.name).collect()
        };
        let mut modes: Vec<Mode> = Vec::new();
        for n in &names {
            if n.ends_with(OLD_SUFFIX) {
                return Err(format!("mode {n:?}: the old harness's modes come with --old-harness REV"));
            }
            let m = Mode::named(n).map_err(|e| e.to_string())?;
            if m.build == Build::Baseline && a.baseline.is_none() {
                return Err(format!("mode '{}' runs the baseline build: give --baseline REV", m.name));
            }
            if !modes.iter().any(|x| x.name == m.name) {
                modes.push(m);
            }
        }
        if modes.is_empty() {
            return Err("no modes selected".into());
        }
        let invocation = std::iter::once("encapd-bench run".to_owned()).chain(std::env::args().skip(2)).collect::<Vec<_>>().join(" ");
        Ok(Config {
            modes,
            underlays,
            reps,
            quick: a.quick,
            short: a.short,
            t: Durations::pick(a.quick, a.short),
            workers: a.workers,
            ctr_mtu: a.ctr_mtu,
            build: !a.no_build,
            sockperf: a.sockperf,
            wait_quiet: a.wait_quiet,
            baseline: a.baseline,
            old_harness: a.old_harness,
            out: a.out,
            invocation,
        })
    }
}

/// Runs `encapd-bench run`.
pub fn run(args: RunArgs) -> ExitStatus {
    quiet_panics();
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("encapd-bench run: {e}");
            return ExitStatus::Usage;
        }
    };
    match execute(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[{}] ERROR: {e}", Utc::now().hms());
            ExitStatus::CannotRun
        }
    }
}

/// The checkout this binary belongs to: the directory holding
/// `bench/tool` above the executable (`target/release/encapd-bench`),
/// else git's top level around the current directory.
/// A directory for a new committed run: `bench/runs/<UTC stamp>-<name>`,
/// with `-2`, `-3`, ... appended when a run of the same minute exists.
pub fn new_run_dir(repo: &Path, name: &str) -> PathBuf {
    let base = repo.join("bench/runs").join(format!("{}-{name}", Utc::now().dir_stamp()));
    let mut out = base.clone();
    let mut n = 2;
    while out.exists() {
        out = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    out
}

pub fn repo_root() -> Result<PathBuf, String> {
    let is_repo = |p: &Path| p.join("bench/tool/Cargo.toml").is_file() && p.join("scripts/lib.sh").is_file();
    if let Ok(exe) = std::env::current_exe()
        && let Some(root) = exe.ancestors().find(|p| is_repo(p))
    {
        return Ok(root.to_owned());
    }
    let top = run_capture(None, &argv(&["git", "rev-parse", "--show-toplevel"]), Duration::from_secs(10))
        .map_err(|e| format!("not inside the encapd repository: {e}"))?;
    let top = PathBuf::from(top.trim());
    if is_repo(&top) { Ok(top) } else { Err(format!("{} is not the encapd repository", top.display())) }
}

/// Installs the Debian packages `pkgs` (groups `@run`, ...) that are
/// missing, from the one list in scripts/lib.sh.
pub fn need_packages(repo: &Path, pkgs: &[&str]) -> Result<(), String> {
    let lib = repo.join("scripts/lib.sh");
    let mut args = argv(&["bash", "-c", ". \"$1\" && shift && ed_need_pkgs \"$@\"", "ed_need_pkgs", &lib.to_string_lossy()]);
    args.extend(pkgs.iter().map(|p| (*p).to_owned()));
    let st = exec::command(None, &args).status().map_err(|e| format!("bash: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("installing Debian packages {} failed", pkgs.join(" "))) }
}

pub fn is_root() -> bool {
    encapd_testbed::env::is_root()
}

/// One step of a repetition.
#[derive(Clone)]
enum Job<'a> {
    /// The new harness: a mode on a profile.
    New(&'a Mode, Underlay),
    /// The old harness on a mode.
    Old(&'a Mode),
}

fn execute(cfg: Config) -> Result<ExitStatus, String> {
    if !is_root() {
        return Err("must run as root (network namespaces); try: sudo encapd-bench run".into());
    }
    let repo = repo_root()?;
    let mut pkgs = vec!["@run", "git", "ethtool"];
    if cfg.build {
        pkgs.push("@build");
    }
    if cfg.sockperf {
        pkgs.push("sockperf");
    }
    // The userspace WireGuard modes: `wg` configures both, wireguard-go is
    // a Debian package, boringtun-cli a crate (checked below).
    let wg: BTreeSet<WgImpl> = cfg.modes.iter().filter_map(|m| m.userspace_wg()).collect();
    if !wg.is_empty() {
        pkgs.push("wireguard-tools");
    }
    if wg.contains(&WgImpl::WireguardGo) {
        pkgs.push("wireguard-go");
    }
    need_packages(&repo, &pkgs)?;
    for imp in &wg {
        imp.locate().map_err(|e| format!("mode {imp}: {e}"))?;
    }
    if cfg.build {
        builds::build_release(&repo)?;
        builds::reexec_if_rebuilt(&repo.join("target/release/encapd-bench"), &["--no-build"])?;
    }
    let probe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let encapd = std::env::var_os("ENCAPD").filter(|v| !v.is_empty()).map_or_else(|| repo.join("target/release/encapd"), PathBuf::from);
    let need_encapd = cfg.old_harness.is_some() || cfg.modes.iter().any(|m| m.encapd().is_some() && m.build == Build::Current);
    if need_encapd && !encapd.is_file() {
        return Err(format!("encapd binary {} missing (cargo build --release)", encapd.display()));
    }
    let baseline = match &cfg.baseline {
        Some(rev) => Some(builds::build_baseline(&repo, rev)?),
        None => None,
    };
    let old = match &cfg.old_harness {
        Some(rev) => {
            let commit = provenance::resolve(&repo, rev).ok_or_else(|| format!("--old-harness: '{rev}' is not a commit"))?;
            Some(OldHarness::checkout(&repo, &commit)?)
        }
        None => None,
    };

    let machine = meta::Machine::read(cfg.sockperf);
    let out = match &cfg.out {
        Some(o) => o.clone(),
        None => new_run_dir(&repo, &machine.host),
    };
    let mut bins: Vec<(&str, &Path)> = vec![("encapd_bench", &probe)];
    if need_encapd {
        bins.push(("encapd", &encapd));
    }
    // Results under bench/runs/ are evidence: checked before the run (a
    // long run must not be wasted) and recorded now, before anything
    // could change.
    if provenance::under_runs(&repo, &out) {
        let paths: Vec<&Path> = bins.iter().map(|(_, p)| *p).collect();
        if let Err(problems) = provenance::require_clean(&repo, &paths) {
            for p in &problems {
                warn(p);
            }
            return Err("refusing to write under bench/runs/: a committed result must name a clean commit and binaries built from it; \
                        commit and rebuild, or write an experiment elsewhere with --out /tmp/DIR"
                .into());
        }
    }
    if let Some((_, bin)) = &baseline {
        bins.push(("encapd_base", bin));
    }
    let prov = provenance::env_lines(&repo, &bins);
    let quiet = wait_quiet(cfg.wait_quiet);

    for u in &cfg.underlays {
        std::fs::create_dir_all(out.join("raw").join(u.name())).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let out = std::fs::canonicalize(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut results = Results::create(&out.join("results.csv")).map_err(|e| format!("results.csv: {e}"))?;
    let mut log = CommandLog::create(&out.join("commands.log")).map_err(|e| format!("commands.log: {e}"))?;
    exec::install_interrupt_handler().map_err(|e| format!("signal handlers: {e}"))?;
    let work = encapd_testbed::cmd::TempDir::new("bench-run");
    info(&format!("results in {}", out.display()));

    let mut beds: Vec<(Underlay, Bed)> = Vec::new();
    for &u in &cfg.underlays {
        info(&format!("bringing up the {u} bench"));
        let bed = catch_unwind(|| Bed::new(u)).map_err(|p| format!("the {u} bench did not come up: {}", panic_text(&p)))?;
        beds.push((u, bed));
    }
    let tcp_cc =
        run_capture(Some(beds[0].1.ctr_ns(Node::A)), &argv(&["cat", "/proc/sys/net/ipv4/tcp_congestion_control"]), Duration::from_secs(5))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
    let loadavg_start = procfs::loadavg();
    let suite = Suite { t: cfg.t, sockperf: cfg.sockperf, hz: procfs::clock_ticks(), probe: probe.clone() };
    let started = Utc::now();
    let t0 = Instant::now();
    let mut failed: Vec<String> = Vec::new();
    let mut saved_configs: BTreeSet<String> = BTreeSet::new();

    'reps: for rep in 1..=cfg.reps {
        let mut jobs: Vec<Job<'_>> = Vec::new();
        for m in &cfg.modes {
            jobs.extend(cfg.underlays.iter().map(|&u| Job::New(m, u)));
            if old.is_some() {
                jobs.push(Job::Old(m));
            }
        }
        // Counterbalanced: a mode's place in the sequence (what ran just
        // before it, how warm the machine is) is not the same in every
        // repetition.
        if rep % 2 == 0 {
            jobs.reverse();
        }
        for job in jobs {
            if interrupted() {
                break 'reps;
            }
            match job {
                Job::New(mode, u) => {
                    let bed = &beds.iter().find(|(x, _)| *x == u).expect("a bed per profile").1;
                    let ctx = ModeRun {
                        cfg: &cfg,
                        bed,
                        suite: &suite,
                        encapd: &encapd,
                        baseline: baseline.as_ref(),
                        out: &out,
                        work: work.path(),
                    };
                    if !ctx.run(mode, rep, &mut results, &mut log, &mut saved_configs)? {
                        failed.push(format!("{}/{u}/r{rep}", mode.name));
                    }
                }
                Job::Old(mode) => {
                    let harness = old.as_ref().expect("old harness checked out");
                    info(&format!("rep {rep}/{} mode {} by the old harness (veth)", cfg.reps, mode.name));
                    log.line(format!("\n# rep {rep} mode {}{OLD_SUFFIX} underlay veth (the old harness)", mode.name));
                    let inv = old_harness::Invocation {
                        t: cfg.t,
                        quick: cfg.quick,
                        short: cfg.short,
                        workers: cfg.workers,
                        ctr_mtu: cfg.ctr_mtu,
                        sockperf: cfg.sockperf,
                        encapd: &encapd,
                        probe: &probe,
                        work: work.path(),
                    };
                    let raw = out.join("raw/veth");
                    let ok = harness
                        .run_mode(&inv, &mode.name, rep, &raw, &mut results, &mut log, || suite.all_na(mode.encapd().is_some()))
                        .map_err(|e| format!("results.csv: {e}"))?;
                    if !ok {
                        failed.push(format!("{}{OLD_SUFFIX}/veth/r{rep}", mode.name));
                    }
                }
            }
        }
    }
    let was_interrupted = interrupted();
    drop(beds);
    let elapsed = t0.elapsed().as_secs();
    let loadavg_end = procfs::loadavg();
    for (key, path) in &bins {
        let now = provenance::sha256_file(path).unwrap_or_default();
        let recorded = prov.iter().find(|(k, _)| *k == format!("{key}_sha256")).map(|(_, v)| v.clone()).unwrap_or_default();
        if now != recorded {
            warn(&format!("{} changed during the run (sha256 now {now})", path.display()));
        }
    }
    let encapd_version = if need_encapd {
        run_capture(None, &argv(&[&encapd.to_string_lossy(), "--version"]), Duration::from_secs(10))
            .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let desc = meta::Description {
        started: started.iso(),
        elapsed_s: elapsed,
        invocation: cfg.invocation.clone(),
        modes: cfg.modes.iter().map(|m| m.name.clone()).collect(),
        underlays: cfg.underlays.iter().map(|u| u.name().to_owned()).collect(),
        reps: cfg.reps,
        t: cfg.t,
        tcp_cc_default: tcp_cc,
        workers: cfg.workers,
        ctr_mtu: cfg.ctr_mtu,
        machine: &machine,
        provenance: &prov,
        encapd_version,
        loadavg_start,
        loadavg_end,
        quiet,
        baseline: baseline.as_ref().map(|(c, b)| (c.clone(), b.display().to_string())),
        old_harness: old.as_ref().map(|o| (o.commit.clone(), cfg.modes.iter().map(|m| format!("{}{OLD_SUFFIX}", m.name)).collect())),
        sockperf: cfg.sockperf,
        failed: &failed,
        bins: bins.iter().map(|(k, p)| ((*k).to_owned(), p.display().to_string())).filter(|(k, _)| k != "encapd_base").collect(),
    };
    std::fs::write(out.join("env.txt"), desc.env_txt()).map_err(|e| format!("env.txt: {e}"))?;
    std::fs::write(out.join("README.md"), desc.readme()).map_err(|e| format!("README.md: {e}"))?;
    for f in meta::drop_large_files(&out.join("raw")) {
        eprintln!("dropped (> 1 MB): {f}");
    }
    if was_interrupted {
        warn("interrupted: results so far are in results.csv; no report");
        return Ok(ExitStatus::Interrupted);
    }
    match crate::report::render(&out) {
        Ok(_) => {
            info(&format!("done in {elapsed} s; results in {}", out.display()));
            let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
            let headline: Vec<&str> =
                md.lines().skip_while(|l| !l.starts_with("## Headline")).take_while(|l| !l.starts_with("## Targets")).collect();
            println!("{}", headline.join("\n"));
        }
        Err(e) => {
            warn(&format!("encapd-bench report {}: {e}", out.display()));
            print!("{}", std::fs::read_to_string(out.join("results.csv")).unwrap_or_default());
        }
    }
    let na = results.na_count();
    if !failed.is_empty() || na > 0 {
        warn(&format!("incomplete run: setup failed for [{}], {na} NA values (see results.csv)", failed.join(" ")));
        return Ok(ExitStatus::Incomplete);
    }
    Ok(ExitStatus::Complete)
}

/// Waits (at most `secs`) for the 1-minute load average to drop below
/// 1.0; returns what happened, for env.txt (empty when not asked).
fn wait_quiet(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    let start = Instant::now();
    while procfs::load1() >= 1.0 && start.elapsed() < Duration::from_secs(secs) && !interrupted() {
        info(&format!("waiting for a quiet machine: load average {}", procfs::loadavg()));
        std::thread::sleep(Duration::from_secs(20));
    }
    if procfs::load1() >= 1.0 {
        let note = format!("machine never quiet within {secs} s (1-minute load {}); ran anyway", procfs::load1());
        warn(&note);
        note
    } else {
        format!("waited {} s for the 1-minute load to drop below 1.0", start.elapsed().as_secs())
    }
}

/// Panics in the harness (a mode that would not come up, a command that
/// failed in the testbed) are caught and recorded as failures of that
/// mode: one warning line each, not a backtrace.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg =
            info.payload().downcast_ref::<String>().cloned().or_else(|| info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()));
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        warn(&format!("{}{at}", msg.unwrap_or_else(|| "panic".into())));
    }));
}

/// A panic's message.
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_else(|| "panic".into())
}

/// One mode on one profile in one repetition, by the new harness.
struct ModeRun<'a> {
    cfg: &'a Config,
    bed: &'a Bed,
    suite: &'a Suite,
    encapd: &'a Path,
    baseline: Option<&'a (String, PathBuf)>,
    out: &'a Path,
    work: &'a Path,
}

impl ModeRun<'_> {
    /// Sets the mode up, runs every test, leaves it; false when the setup
    /// failed (its tests are then recorded as NA).
    fn run(
        &self,
        mode: &Mode,
        rep: u32,
        results: &mut Results,
        log: &mut CommandLog,
        saved: &mut BTreeSet<String>,
    ) -> Result<bool, String> {
        let u = self.bed.underlay;
        let cell = Cell { mode: mode.name.clone(), underlay: u.name().to_owned(), rep };
        let ctr_mtu = self.cfg.ctr_mtu.unwrap_or_else(|| mode.ctr_mtu(UNDERLAY_MTU));
        info(&format!("rep {rep}/{} mode {} underlay {u}", self.cfg.reps, mode.name));
        log.line(format!("\n# rep {rep} mode {} underlay {u} (container MTU {ctr_mtu})", mode.name));
        let dir = self.work.join(u.name()).join(format!("{}-r{rep}", mode.name));
        let raw = self.out.join("raw").join(u.name());
        let bin: &Path = match (mode.build, self.baseline) {
            (Build::Baseline, Some((_, b))) => b,
            _ => self.encapd,
        };
        let entered = catch_unwind(AssertUnwindSafe(|| {
            let configs = self.bed.write_configs(mode, self.cfg.workers, &dir);
            if let (Build::Baseline, Some((commit, base))) = (mode.build, self.baseline) {
                for (node, config, _) in &configs.nodes {
                    for note in baseline::fit_config(base, self.bed.node_ns(*node), config, commit) {
                        log.line(note);
                    }
                }
            }
            if !configs.nodes.is_empty() && saved.insert(mode.name.clone()) {
                let to = self.out.join("configs").join(&mode.name);
                let _ = std::fs::create_dir_all(&to);
                for (_, config, peers) in &configs.nodes {
                    for f in [config, peers] {
                        let _ = std::fs::copy(f, to.join(f.file_name().unwrap_or_default()));
                    }
                }
            }
            self.bed.enter(mode, &configs, bin, ctr_mtu)
        }));
        let active = match entered {
            Ok(Ok(a)) => a,
            Ok(Err(why)) => return self.setup_failed(mode, &cell, &why, &dir, &raw, results),
            Err(p) => return self.setup_failed(mode, &cell, &panic_text(&p), &dir, &raw, results),
        };
        for s in &active.setup {
            log.line(format!("# setup: {s}"));
        }
        for (n, line) in active.engine_lines() {
            info(&format!("  {} node{}: {line}", mode.name, if n == Node::A { "A" } else { "B" }));
        }
        let target = Target { bed: self.bed, active: &active, cell: cell.clone(), raw: raw.clone() };
        let tested = catch_unwind(AssertUnwindSafe(|| self.suite.run_all(&target, results, log)));
        match tested {
            Ok(r) => r.map_err(|e| format!("results.csv: {e}"))?,
            Err(p) => warn(&format!("{} {u} rep {rep}: the tests stopped: {}", mode.name, panic_text(&p))),
        }
        let summary: Vec<String> = ["tcp1", "tcp4", "udp64_pps", "lat50_p50", "tcp1_cpu_per_gbps", "tcp1_paced_encapd_cpu_per_gbps"]
            .iter()
            .filter_map(|t| {
                results
                    .rows_of(&cell)
                    .find(|r| r.test == *t)
                    .map(|r| format!("{t}={}{}", r.value.map_or("NA".into(), record::fmt_g6), r.unit))
            })
            .collect();
        info(&format!("  {}", summary.join(" ")));
        let prefix = format!("{}-r{rep}", mode.name);
        for n in active.encapd_nodes() {
            if let Some(text) = active.metrics(n) {
                let _ = std::fs::write(raw.join(format!("{prefix}-metrics-{}.txt", node_name(n))), text);
            }
        }
        let left = active.leave();
        for (n, text) in &left.logs {
            let _ = std::fs::write(raw.join(format!("{prefix}-encapd-{}.log", node_name(*n))), text);
        }
        if let Some((n, text)) = &left.vtep_stats {
            let _ = std::fs::write(raw.join(format!("{prefix}-vtep-{}.txt", node_name(*n))), text);
        }
        for (n, name, text) in &left.wg_logs {
            let _ = std::fs::write(raw.join(format!("{prefix}-{name}-{}.log", node_name(*n))), text);
        }
        for p in &left.problems {
            warn(&format!("{} {u} rep {rep}: {p}", mode.name));
        }
        Ok(true)
    }

    fn setup_failed(&self, mode: &Mode, cell: &Cell, why: &str, dir: &Path, raw: &Path, results: &mut Results) -> Result<bool, String> {
        warn(&format!("mode {} {} rep {}: setup failed, recording NA: {why}", mode.name, cell.underlay, cell.rep));
        for n in [Node::A, Node::B] {
            if let Ok(text) = std::fs::read_to_string(dir.join(format!("{}.log", n.sub()))) {
                let _ = std::fs::write(raw.join(format!("{}-r{}-encapd-{}.log", mode.name, cell.rep, node_name(n))), text);
            }
            // A userspace WireGuard daemon's log (wg_peer::Pair: `wg-a.log`).
            if let (Some(imp), Ok(text)) = (mode.userspace_wg(), std::fs::read_to_string(dir.join(format!("wg-{}.log", n.sub())))) {
                let _ = std::fs::write(raw.join(format!("{}-r{}-{imp}-{}.log", mode.name, cell.rep, node_name(n))), text);
            }
        }
        results.add(cell, self.suite.all_na(mode.encapd().is_some())).map_err(|e| format!("results.csv: {e}"))?;
        Ok(false)
    }
}

fn node_name(n: Node) -> &'static str {
    match n {
        Node::A => "nodeA",
        Node::B => "nodeB",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(modes: &[&str]) -> RunArgs {
        RunArgs {
            quick: false,
            short: false,
            reps: None,
            modes: modes.iter().map(|m| (*m).to_owned()).collect(),
            underlay: vec![Underlay::Veth, Underlay::Wire],
            out: None,
            workers: 2,
            ctr_mtu: None,
            no_build: true,
            sockperf: false,
            wait_quiet: 0,
            baseline: None,
            old_harness: None,
        }
    }

    #[test]
    fn options_are_validated() {
        let c = Config::from_args(args(&[])).unwrap();
        assert_eq!(c.modes.len(), Mode::defaults().len());
        assert_eq!((c.reps, c.t), (3, Durations { tcp: 5, udp: 2, lat: 3, rr: 3 }));
        let quick = Config::from_args(RunArgs { quick: true, ..args(&["vxlan", "uring", "uring"]) }).unwrap();
        assert_eq!(quick.reps, 1);
        assert_eq!(quick.modes.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["vxlan-kernel", "uring"], "old name, duplicate");
        assert!(Config::from_args(args(&["uring-base"])).is_err(), "needs --baseline");
        assert!(Config::from_args(RunArgs { baseline: Some("HEAD".into()), ..args(&["uring-base"]) }).is_ok());
        let base = Config::from_args(RunArgs { baseline: Some("HEAD".into()), ..args(&[]) }).unwrap();
        assert_eq!(base.modes.len(), 5);
        assert!(Config::from_args(args(&["uring-old"])).is_err());
        assert!(Config::from_args(args(&["nope"])).is_err());
        assert!(Config::from_args(RunArgs { reps: Some(0), ..args(&[]) }).is_err());
        assert!(Config::from_args(RunArgs { underlay: vec![Underlay::Wire, Underlay::Wire], ..args(&[]) }).unwrap().underlays.len() == 1);
    }
}
