//! Benchmark reports: [`render`] turns a run directory written by
//! `encapd-bench run` (or, before it, `bench/run.sh`) into `report.md` plus
//! SVG charts, deterministically (the same input gives byte-identical
//! output: no timestamps, no paths, fixed ordering).
//!
//! A run directory holds:
//! - `results.csv`: `mode,underlay,rep,test,value,unit`, one row per
//!   measured value (`NA` when a test failed); the only required file.
//!   Runs from before the underlay profiles wrote `mode,rep,test,value,unit`,
//!   and are read as the `veth` profile (the only one they had);
//! - `env.txt`: `key=value` lines describing the run (kernel, CPU, git
//!   revision, durations, …), used for the report's header;
//! - `raw/<profile>/<mode>-r<rep>-lat<load>.hgrm` (`raw/<mode>-r<rep>-...`
//!   before the profiles): latency percentile distributions written by
//!   `encapd-bench latency client`, used for the latency charts.
//!
//! Every mode name and what the report says of a mode (its family, which
//! mode is the base of which comparison) comes from the mode registry
//! (`encapd_testbed::mode`). Each profile is reported on its own (ratios
//! are taken within a profile, never across), and the headline shows the
//! profiles side by side.
//!
//! `encapd-bench report DIR` calls [`render`]; [`readme`] turns a run into
//! the README's performance block. [`hgrm`] also holds the `.hgrm` writer
//! of `encapd-bench latency`.

mod charts;
pub mod hgrm;
pub mod readme;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// What [`render`] wrote.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// `DIR/report.md`.
    pub report: PathBuf,
    /// Every chart written, in the order the report embeds them.
    pub charts: Vec<PathBuf>,
    /// Modes in report order.
    pub modes: Vec<String>,
    /// The targets and how they fared (`None`: not computable from the run).
    pub targets: Vec<(String, Option<bool>)>,
    /// The headline table as Markdown (also part of `report.md`).
    pub headline: String,
}

/// Why a report could not be rendered.
#[derive(Debug)]
pub enum ReportError {
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: std::io::Error },
    /// `results.csv` (or another input) is malformed.
    Parse { path: PathBuf, line: usize, message: String },
    /// `results.csv` holds no rows.
    NoData { path: PathBuf },
    /// Drawing a chart failed.
    Chart { name: String, message: String },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ReportError::Parse { path, line, message } => write!(f, "{}:{line}: {message}", path.display()),
            ReportError::NoData { path } => write!(f, "{}: no result rows", path.display()),
            ReportError::Chart { name, message } => write!(f, "chart {name}: {message}"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

pub use encapd_testbed::mode::{
    BASELINE_SUFFIX, CLASSIC, ENCAPD_VXLAN, ENCAPD_VXLAN_KERNEL, ENCAPD_VXLAN_MIXED, ENCAPD_VXLAN_MIXED_KERNEL, KERNEL_PATH, KERNEL_VXLAN,
    ROUTING, URING as UDP_HEADLINE,
};
use encapd_testbed::mode::{BORINGTUN, Family, Mode, WIREGUARD, WIREGUARD_GO};

/// The suffix of a mode measured by the old shell harness
/// (`encapd-bench run --old-harness REV`).
pub const OLD_HARNESS_SUFFIX: &str = "-old";

/// A mode's name as the report uses it (an old alias, e.g. `vxlan` for
/// the kernel pair, is read as the mode's current name).
pub fn canonical_mode(mode: &str) -> &str {
    encapd_testbed::mode::canonical(mode)
}

/// The family a mode is grouped in (a baseline build's and an old-harness
/// measurement's are their mode's); `None` for a name the registry does
/// not know.
pub fn family_of(mode: &str) -> Option<Family> {
    let m = mode.strip_suffix(OLD_HARNESS_SUFFIX).unwrap_or(mode);
    Mode::named(m).ok().map(|m| m.family())
}

/// Everything read from a run directory.
#[derive(Debug, Default)]
pub(crate) struct Run {
    env: Vec<(String, String)>,
    /// The underlay profile these results were measured on.
    pub(crate) profile: String,
    /// Where this profile's raw files are, relative to the run directory:
    /// `raw/<profile>`, or `raw` for a run from before the profiles.
    pub(crate) raw_dir: String,
    pub(crate) modes: Vec<String>,
    /// Modes whose files (`raw/<mode>-r<rep>-*`) carry another name than the
    /// mode's (a run before the rename of `vxlan`): mode -> recorded name.
    recorded_names: BTreeMap<String, String>,
    pub(crate) reps: Vec<u32>,
    tests: Vec<String>,
    units: BTreeMap<String, String>,
    /// (mode, test) -> rep -> value; NA values are absent.
    values: BTreeMap<(String, String), BTreeMap<u32, f64>>,
}

/// Replies lost above which a latency percentile is not comparable: a
/// lost reply is missing from the distribution, and when more than 1 % are
/// missing, the tail the percentiles claim to describe is not measured.
pub const LATENCY_LOSS_LIMIT_PCT: f64 = 1.0;

impl Run {
    pub(crate) fn env(&self, key: &str) -> Option<&str> {
        self.env_recorded(key).filter(|v| !v.is_empty())
    }

    /// A key's value even when empty (an empty list is a recorded value).
    fn env_recorded(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub(crate) fn per_rep(&self, mode: &str, test: &str) -> Option<&BTreeMap<u32, f64>> {
        self.values.get(&(mode.to_string(), test.to_string()))
    }

    pub(crate) fn value(&self, mode: &str, rep: u32, test: &str) -> Option<f64> {
        self.per_rep(mode, test).and_then(|m| m.get(&rep).copied())
    }

    /// Median over the repetitions with a value (mean of the middle two for
    /// an even count).
    pub(crate) fn median(&self, mode: &str, test: &str) -> Option<f64> {
        median_of(self.per_rep(mode, test)?.values().copied().collect())
    }

    /// The repetition whose value of `test` is the (lower) median; ties go
    /// to the earlier repetition.
    pub(crate) fn median_rep(&self, mode: &str, test: &str) -> Option<u32> {
        self.median_reps(mode, test).first().copied()
    }

    /// The repetitions the median of `test` is made of: the middle one, or
    /// the middle two for an even count (lower first); ties by repetition.
    fn median_reps(&self, mode: &str, test: &str) -> Vec<u32> {
        let Some(values) = self.per_rep(mode, test) else { return Vec::new() };
        let mut v: Vec<(f64, u32)> = values.iter().map(|(&r, &x)| (x, r)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        match v.len() {
            0 => Vec::new(),
            n if n % 2 == 1 => vec![v[n / 2].1],
            n => vec![v[n / 2 - 1].1, v[n / 2].1],
        }
    }

    /// For a latency result (`lat<N>_p50`, `_p99`, `_max`, ...): the replies
    /// lost, in %, in the repetition(s) its median comes from (the highest
    /// when two). None for other tests or when the loss was not recorded.
    pub(crate) fn loss_behind(&self, mode: &str, test: &str) -> Option<f64> {
        let load = latency_load(test)?;
        let loss = format!("lat{load}_loss");
        self.median_reps(mode, test).iter().filter_map(|&r| self.value(mode, r, &loss)).max_by(f64::total_cmp)
    }

    /// Whether the median of `test` was measured over more than
    /// [`LATENCY_LOSS_LIMIT_PCT`] lost replies.
    pub(crate) fn not_comparable(&self, mode: &str, test: &str) -> bool {
        self.loss_behind(mode, test).is_some_and(|l| l > LATENCY_LOSS_LIMIT_PCT)
    }

    /// The same for one repetition's value.
    fn rep_not_comparable(&self, mode: &str, rep: u32, test: &str) -> bool {
        latency_load(test).and_then(|load| self.value(mode, rep, &format!("lat{load}_loss"))).is_some_and(|l| l > LATENCY_LOSS_LIMIT_PCT)
    }

    fn has(&self, mode: &str) -> bool {
        self.modes.iter().any(|m| m == mode)
    }

    /// The name `mode` has in the run's file names (`raw/<name>-r<rep>-*`).
    pub(crate) fn recorded_name<'a>(&'a self, mode: &'a str) -> &'a str {
        self.recorded_names.get(mode).map(String::as_str).unwrap_or(mode)
    }

    /// Whether the run measured the vxlan backend (either of its modes).
    pub(crate) fn has_vxlan_backend(&self) -> bool {
        self.has(ENCAPD_VXLAN) || self.has(ENCAPD_VXLAN_MIXED)
    }

    /// Latency loads present (`lat<N>_p50` tests), ascending.
    pub(crate) fn latency_loads(&self) -> Vec<u32> {
        let mut loads: Vec<u32> = self.tests.iter().filter_map(|t| t.strip_prefix("lat")?.strip_suffix("_p50")?.parse().ok()).collect();
        loads.sort_unstable();
        loads.dedup();
        loads
    }
}

/// `lat<N>_<stat>` where the stat is one of the probe's RTT figures: N.
fn latency_load(test: &str) -> Option<u32> {
    const RTT: [&str; 6] = ["p50", "p90", "p99", "p999", "max", "mean"];
    let (load, stat) = test.strip_prefix("lat")?.split_once('_')?;
    RTT.contains(&stat).then(|| load.parse().ok()).flatten()
}

fn read_env(path: &Path) -> Result<Vec<(String, String)>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// A run's results, one [`Run`] per underlay profile.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    /// In the order reports show them: veth, wire, then any other.
    pub(crate) profiles: Vec<Run>,
    /// Whether `results.csv` names the profile (runs since the profiles);
    /// chart file names carry the profile then.
    pub(crate) profiled: bool,
}

impl Runs {
    /// The first profile's view, for what every profile shares (env.txt).
    pub(crate) fn first(&self) -> &Run {
        &self.profiles[0]
    }

    /// The profile headline figures come from: `wire` when measured (a
    /// wire is what every real node has), else the only one.
    pub(crate) fn headline(&self) -> &Run {
        self.profiles.iter().find(|r| r.profile == "wire").unwrap_or(self.first())
    }

    /// Every mode of any profile, in report order.
    pub(crate) fn modes(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.profiles {
            for m in &r.modes {
                if !v.contains(m) {
                    v.push(m.clone());
                }
            }
        }
        order_modes(v)
    }

    fn multi(&self) -> bool {
        self.profiles.len() > 1
    }
}

/// The profile of runs from before the profiles: a plain veth underlay.
pub const UNPROFILED: &str = "veth";

/// Modes grouped by family (the registry's order of families; unknown
/// names last), keeping their order within a family; a mode's old-harness
/// measurement right after the mode.
fn order_modes(modes: Vec<String>) -> Vec<String> {
    let rank = |m: &String| family_of(m).map_or(usize::MAX, |f| f as usize);
    let (old, mut ordered): (Vec<String>, Vec<String>) = modes.into_iter().partition(|m| m.ends_with(OLD_HARNESS_SUFFIX));
    ordered.sort_by_key(rank);
    for o in old {
        let base = o.trim_end_matches(OLD_HARNESS_SUFFIX);
        match ordered.iter().position(|m| m == base) {
            Some(i) => ordered.insert(i + 1, o),
            None => ordered.push(o),
        }
    }
    ordered
}

fn read_runs(dir: &Path) -> Result<Runs, ReportError> {
    let env = read_env(&dir.join("env.txt"))?;
    let path = dir.join("results.csv");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let perr = |line: usize, message: String| ReportError::Parse { path: path.clone(), line, message };
    let mut lines = text.lines().enumerate();
    let profiled = match lines.next() {
        Some((_, h)) if h.trim() == "mode,underlay,rep,test,value,unit" => true,
        Some((_, h)) if h.trim() == "mode,rep,test,value,unit" => false,
        other => {
            return Err(perr(
                1,
                format!(
                    "expected header `mode,underlay,rep,test,value,unit` (or `mode,rep,test,value,unit`), got {:?}",
                    other.map(|o| o.1)
                ),
            ));
        }
    };
    let mut by_profile: Vec<Run> = Vec::new();
    let mut seen_modes: Vec<String> = Vec::new();
    let mut rows = 0;
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let want = if profiled { 6 } else { 5 };
        if f.len() != want {
            return Err(perr(i + 1, format!("expected {want} fields, got {}", f.len())));
        }
        let (recorded, profile, f) = if profiled { (f[0], f[1], &f[2..]) } else { (f[0], UNPROFILED, &f[1..]) };
        let (mode, test, unit) = (canonical_mode(recorded).to_string(), f[1].to_string(), f[3].to_string());
        if mode.is_empty() || test.is_empty() || profile.is_empty() {
            return Err(perr(i + 1, "empty mode, underlay or test".into()));
        }
        let rep: u32 = f[0].parse().map_err(|_| perr(i + 1, format!("bad repetition {:?}", f[0])))?;
        let value = match f[2] {
            "NA" | "" => None,
            v => Some(v.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| perr(i + 1, format!("bad value {v:?}")))?),
        };
        rows += 1;
        if !seen_modes.contains(&mode) {
            seen_modes.push(mode.clone());
        }
        let run = match by_profile.iter().position(|r| r.profile == profile) {
            Some(k) => &mut by_profile[k],
            None => {
                let raw_dir = if profiled { format!("raw/{profile}") } else { "raw".into() };
                by_profile.push(Run { env: env.clone(), profile: profile.to_string(), raw_dir, ..Run::default() });
                by_profile.last_mut().expect("just pushed")
            }
        };
        if mode != recorded {
            run.recorded_names.insert(mode.clone(), recorded.to_string());
        }
        if !run.modes.contains(&mode) {
            run.modes.push(mode.clone());
        }
        if !run.reps.contains(&rep) {
            run.reps.push(rep);
        }
        if !run.tests.contains(&test) {
            run.tests.push(test.clone());
        }
        run.units.entry(test.clone()).or_insert(unit);
        let slot = run.values.entry((mode, test)).or_default();
        if let Some(v) = value {
            slot.insert(rep, v);
        }
    }
    if rows == 0 {
        return Err(ReportError::NoData { path });
    }
    // Mode order: as the run lists them (env `modes`), then any others in
    // order of appearance; grouped by family.
    let listed: Vec<String> = env
        .iter()
        .find(|(k, _)| k == "modes")
        .map(|(_, m)| m.split_whitespace().map(|m| canonical_mode(m).to_string()).collect())
        .unwrap_or_default();
    let mut order: Vec<String> = listed.into_iter().filter(|m| seen_modes.contains(m)).collect();
    for m in seen_modes {
        if !order.contains(&m) {
            order.push(m);
        }
    }
    let order = order_modes(order);
    let rank = |p: &str| encapd_testbed::underlay::Underlay::ALL.iter().position(|u| u.name() == p).unwrap_or(usize::MAX);
    by_profile.sort_by_key(|r| rank(&r.profile));
    for run in &mut by_profile {
        run.reps.sort_unstable();
        run.modes = order.iter().filter(|m| run.modes.contains(m)).cloned().collect();
        run.tests = order_tests(std::mem::take(&mut run.tests));
    }
    Ok(Runs { profiles: by_profile, profiled })
}

/// Known tests first, in a fixed order, then unknown ones by name.
fn order_tests(mut tests: Vec<String>) -> Vec<String> {
    const FAMILIES: [&str; 8] = ["tcp1", "tcp1_cubic", "tcp1_paced", "tcp4", "tcp4_cubic", "udp64", "udp512", "udp1400"];
    const SUFFIXES: [&str; 11] = [
        "",
        "_retrans",
        "_cpu",
        "_cpu_per_gbps",
        "_encapd_cpu",
        "_encapd_cpu_per_gbps",
        "_encapd_cs_vol_per_gb",
        "_encapd_cs_invol_per_gb",
        "_pps",
        "_sent_pps",
        "_loss",
    ];
    const LAT: [&str; 10] = ["p50", "p90", "p99", "p999", "max", "mean", "lost", "loss", "offered_pps", "achieved_pps"];
    let rank = |t: &str| -> (usize, usize, usize) {
        for (fi, fam) in FAMILIES.iter().enumerate() {
            if let Some(si) = t.strip_prefix(fam).and_then(|suffix| SUFFIXES.iter().position(|s| *s == suffix)) {
                return (fi, 0, si);
            }
        }
        if let Some((load, suffix)) = t.strip_prefix("lat").and_then(|r| r.split_once('_'))
            && let Ok(load) = load.parse::<usize>()
            && let Some(si) = LAT.iter().position(|s| *s == suffix)
        {
            return (FAMILIES.len(), load, si);
        }
        (usize::MAX, 0, 0)
    };
    tests.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    tests
}

/// Display unit and formatted value for a raw unit.
fn display_unit(unit: &str) -> &str {
    match unit {
        "pps" => "kpps",
        "us" => "µs",
        other => other,
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "Gbit/s" | "cores" => format!("{v:.2}"),
        "pps" => format!("{:.1}", v / 1e3),
        "%" => format!("{v:.2}"),
        "us" if v < 100.0 => format!("{v:.1}"),
        "us" | "count" | "per GB" => format!("{v:.0}"),
        "cores/(Gbit/s)" => format!("{v:.3}"),
        _ => format!("{v:.3}"),
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| fmt_value(v, unit)).unwrap_or_else(|| "n/a".into())
}

/// Marks a latency figure measured over too many lost replies.
const NOT_COMPARABLE_MARK: &str = " †";

/// A median as a table cell: latency figures carry the loss behind them
/// (`with_loss`) and the not-comparable mark.
fn fmt_median(run: &Run, mode: &str, test: &str, unit: &str, with_loss: bool) -> String {
    let Some(v) = run.median(mode, test) else { return "n/a".into() };
    let mut cell = fmt_value(v, unit);
    if with_loss && let Some(loss) = run.loss_behind(mode, test) {
        let _ = write!(cell, " ({loss:.2} % lost)");
    }
    if run.not_comparable(mode, test) {
        cell.push_str(NOT_COMPARABLE_MARK);
    }
    cell
}

/// What the mark means, for the notes under a table that uses it.
const NOT_COMPARABLE_NOTE: &str = "†: measured over more than 1 % lost replies (a lost reply is missing from the distribution), \
so the figure is not comparable with the others.";

/// A ratio of medians; `n/c` when either side is not comparable.
fn ratio_cell(run: &Run, mode: &str, base: &str, test: &str) -> String {
    if run.not_comparable(mode, test) || run.not_comparable(base, test) {
        return "n/c".into();
    }
    fmt_ratio(run.median(mode, test), run.median(base, test))
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    fmt_opt_ratio(ratio(a, b))
}

/// `a ÷ b` when both are measured and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_opt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}×"))
}

/// A column of the headline table.
struct Headline {
    test: &'static str,
    header: &'static str,
    unit: &'static str,
    /// Whether the ratio tables show this column.
    ratio: bool,
}

const HEADLINE: &[Headline] = &[
    Headline { test: "tcp1", header: "TCP 1 stream Gbit/s", unit: "Gbit/s", ratio: true },
    Headline { test: "tcp4", header: "TCP 4 streams Gbit/s", unit: "Gbit/s", ratio: true },
    Headline { test: "udp64_pps", header: "UDP 64 B kpps", unit: "pps", ratio: true },
    Headline { test: "udp64_loss", header: "UDP 64 B loss %", unit: "%", ratio: false },
    Headline { test: "lat10_p50", header: "RTT p50 µs @10 %", unit: "us", ratio: true },
    Headline { test: "lat50_p50", header: "RTT p50 µs @50 %", unit: "us", ratio: true },
    Headline { test: "lat50_p99", header: "RTT p99 µs @50 %", unit: "us", ratio: true },
    Headline { test: "tcp1_cpu_per_gbps", header: "CPU cores per Gbit/s, whole machine (TCP 1)", unit: "cores/(Gbit/s)", ratio: true },
    // No ratios: routing and vxlan-kernel, the bases, run no encapd.
    Headline { test: "tcp1_encapd_cpu_per_gbps", header: "encapd CPU cores per Gbit/s (TCP 1)", unit: "cores/(Gbit/s)", ratio: false },
    Headline { test: "tcp4_cpu_per_gbps", header: "CPU cores per Gbit/s, whole machine (TCP 4)", unit: "cores/(Gbit/s)", ratio: true },
    Headline { test: "tcp4_encapd_cpu_per_gbps", header: "encapd CPU cores per Gbit/s (TCP 4)", unit: "cores/(Gbit/s)", ratio: false },
];

/// The header of column `header` for `profile`: named when the run has
/// more than one profile.
fn col(runs: &Runs, header: &str, profile: &str) -> String {
    if runs.multi() { format!("{header} [{profile}]") } else { header.to_owned() }
}

/// A row naming a family, when the rows span several.
fn family_row(runs: &Runs, mode: &str, last: &mut Option<Option<Family>>, columns: usize) -> Option<String> {
    let fam = family_of(mode);
    let families: BTreeSet<Option<Family>> = runs.modes().iter().map(|m| family_of(m)).collect();
    if families.len() < 2 || *last == Some(fam) {
        return None;
    }
    *last = Some(fam);
    let title = fam.map_or("other", |f| f.title());
    Some(format!("| **{title}** |{}\n", " |".repeat(columns)))
}

/// The headline's columns in groups of a kind (throughput, latency,
/// cost): with several profiles each group is a table of its own, so
/// that the side-by-side columns stay readable.
const HEADLINE_GROUPS: &[(&str, std::ops::Range<usize>)] = &[("Throughput", 0..4), ("Latency", 4..7), ("CPU", 7..11)];

/// The groups a table is split into: one with every column for a single
/// profile, [`HEADLINE_GROUPS`] for several.
fn groups(runs: &Runs, cols: &[&'static Headline]) -> Vec<(Option<&'static str>, Vec<&'static Headline>)> {
    if !runs.multi() {
        return vec![(None, cols.to_vec())];
    }
    HEADLINE_GROUPS
        .iter()
        .map(|(name, range)| {
            (Some(*name), cols.iter().filter(|h| HEADLINE[range.clone()].iter().any(|x| x.test == h.test)).copied().collect())
        })
        .filter(|(_, c): &(Option<&str>, Vec<&Headline>)| !c.is_empty())
        .collect()
}

/// A table per group of `cols`: a row per mode (grouped by family), a
/// column per figure and profile; `cell` renders one.
fn side_by_side(
    runs: &Runs,
    profiles: &[&Run],
    modes: &[String],
    cols: &[&'static Headline],
    cell: impl Fn(&Run, &str, &Headline) -> String,
) -> String {
    let mut s = String::new();
    for (name, group) in groups(runs, cols) {
        if let Some(name) = name {
            let _ = writeln!(s, "**{name}**\n");
        }
        let headers: Vec<String> = group.iter().flat_map(|h| profiles.iter().map(|r| col(runs, h.header, &r.profile))).collect();
        let _ = writeln!(s, "| mode | {} |", headers.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(headers.len()));
        let mut last = None;
        for m in modes {
            s.extend(family_row(runs, m, &mut last, headers.len()));
            let cells: Vec<String> = group.iter().flat_map(|h| profiles.iter().map(|r| cell(r, m, h))).collect();
            let _ = writeln!(s, "| {m} | {} |", cells.join(" | "));
        }
        if name.is_some() {
            s.push('\n');
        }
    }
    if runs.multi() {
        s.pop();
    }
    s
}

/// The headline: every headline figure of every mode, the profiles side
/// by side.
fn headline_table(runs: &Runs) -> String {
    let cols: Vec<&Headline> = HEADLINE.iter().collect();
    let profiles: Vec<&Run> = runs.profiles.iter().collect();
    side_by_side(runs, &profiles, &runs.modes(), &cols, |r, m, h| fmt_median(r, m, h.test, h.unit, true))
}

/// Every mode ÷ `base` on the headline's ratio columns, within each
/// profile, the profiles side by side.
fn ratio_table(runs: &Runs, base: &str) -> String {
    let cols: Vec<&Headline> = HEADLINE.iter().filter(|h| h.ratio).collect();
    let profiles: Vec<&Run> = runs.profiles.iter().filter(|r| r.has(base)).collect();
    let modes: Vec<String> = runs.modes().into_iter().filter(|m| m != base).collect();
    side_by_side(runs, &profiles, &modes, &cols, |r, m, h| ratio_cell(r, m, base, h.test))
}

const BEFORE_AFTER_NOTE: &str = "`M-base` is mode `M` run by encapd as built from the baseline revision (`baseline_rev` in env.txt), \
with the same configuration, in the same run, the two interleaved in every repetition. Each cell is M ÷ M-base: throughput above 1.00× \
and RTT or CPU below 1.00× mean the newer build is better. `median`: M's median ÷ M-base's median; `paired`: the median of the \
repetitions' ratios (each pairs two runs made minutes apart, so it is the steadier of the two where the machine's speed drifts). The last column compares encapd's own CPU with one TCP stream held at \
1 Gbit/s: both builds do the same work there, so it is the change in cost per byte, the steadiest figure of the table.";

/// Columns the before/after table adds to the headline's ratio columns:
/// encapd's own cost, which a mode and its baseline both have; at the paced
/// rate both builds do the same work, so the ratio is the change in cost
/// per byte, free of how each one's saturation happened to go.
const BEFORE_AFTER_EXTRA: &[Headline] = &[
    Headline { test: "tcp1_encapd_cpu_per_gbps", header: "encapd CPU cores per Gbit/s (TCP 1)", unit: "cores/(Gbit/s)", ratio: true },
    Headline {
        test: "tcp1_paced_encapd_cpu_per_gbps",
        header: "encapd CPU cores per Gbit/s (TCP 1 paced at 1 Gbit/s)",
        unit: "cores/(Gbit/s)",
        ratio: true,
    },
];

/// What `mode` is divided by in the before/after table: its own
/// baseline build, or for a mode that differs from another in one
/// setting (the registry's `against_baseline_of`, e.g. `uring-nocoop`),
/// that mode's: (the mode it is built as, what differs besides the build).
fn built_as(mode: &str) -> Option<(&'static str, &'static str)> {
    Mode::named(mode).ok().and_then(|m| m.against_baseline_of())
}

/// Pairs (mode, its baseline) that the run measured, in run order.
fn baseline_pairs(run: &Run) -> Vec<(&str, String)> {
    counterpart_pairs(run, BASELINE_SUFFIX)
}

/// Pairs (mode, its counterpart with `suffix`) that the run measured.
fn counterpart_pairs<'r>(run: &'r Run, suffix: &str) -> Vec<(&'r str, String)> {
    run.modes
        .iter()
        .filter(|m| !m.ends_with(BASELINE_SUFFIX) && !m.ends_with(OLD_HARNESS_SUFFIX))
        .map(|m| {
            let base = if suffix == BASELINE_SUFFIX { built_as(m).map_or(m.as_str(), |b| b.0) } else { m.as_str() };
            (m.as_str(), format!("{base}{suffix}"))
        })
        .filter(|(_, base)| run.has(base))
        .collect()
}

/// Each mode ÷ its baseline build: medians, then every repetition.
/// Empty when the run has no baseline modes.
fn before_after_table(run: &Run) -> String {
    let pairs = baseline_pairs(run);
    if pairs.is_empty() {
        return String::new();
    }
    let cols: Vec<&Headline> = HEADLINE.iter().filter(|h| h.ratio).chain(BEFORE_AFTER_EXTRA).collect();
    let mut s = String::new();
    let _ = writeln!(s, "| mode ÷ baseline | rep | {} |", cols.iter().map(|h| h.header).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(cols.len()));
    for (mode, base) in &pairs {
        let medians: Vec<String> = cols.iter().map(|h| ratio_cell(run, mode, base, h.test)).collect();
        let _ = writeln!(s, "| {mode} ÷ {base} | median | {} |", medians.join(" | "));
        let paired: Vec<String> = cols.iter().map(|h| fmt_opt_ratio(paired_median(run, mode, base, h.test))).collect();
        let _ = writeln!(s, "| | paired | {} |", paired.join(" | "));
        for &rep in &run.reps {
            let cells: Vec<String> = cols.iter().map(|h| rep_ratio(run, mode, base, rep, h.test)).collect();
            let _ = writeln!(s, "| | {rep} | {} |", cells.join(" | "));
        }
    }
    s
}

/// The note under the before/after table: what every pair means, and what
/// a cross-baseline pair in `pairs` differs in besides the build.
fn before_after_note(pairs: &[(&str, String)]) -> String {
    let mut note = BEFORE_AFTER_NOTE.to_string();
    for (mode, _) in pairs {
        if let Some((built_as, differs)) = built_as(mode) {
            let _ = write!(note, " `{mode} ÷ {built_as}{BASELINE_SUFFIX}` differs in one setting too: {differs}.");
        }
    }
    note
}

/// Whether repetition `rep` of `test` is comparable in both modes.
fn comparable(run: &Run, mode: &str, base: &str, rep: u32, test: &str) -> bool {
    !run.rep_not_comparable(mode, rep, test) && !run.rep_not_comparable(base, rep, test)
}

/// `mode` ÷ `base` in repetition `rep`; `n/c` when either is not comparable.
fn rep_ratio(run: &Run, mode: &str, base: &str, rep: u32, test: &str) -> String {
    if !comparable(run, mode, base, rep, test) {
        return "n/c".into();
    }
    fmt_ratio(run.value(mode, rep, test), run.value(base, rep, test))
}

/// The median of the per-repetition ratios `mode` ÷ `base` over the
/// repetitions where both are measured and comparable. The two ran back
/// to back in each repetition, so each ratio cancels what the machine was
/// doing then; a ratio of medians can pair a fast moment of one with a
/// slow moment of the other.
fn paired_median(run: &Run, mode: &str, base: &str, test: &str) -> Option<f64> {
    let ratios: Vec<f64> = run
        .reps
        .iter()
        .filter(|&&rep| comparable(run, mode, base, rep, test))
        .filter_map(|&rep| ratio(run.value(mode, rep, test), run.value(base, rep, test)))
        .collect();
    median_of(ratios)
}

/// Median of `v` (mean of the middle two for an even count); None when empty.
fn median_of(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

struct Target {
    name: String,
    verdict: Option<bool>,
    detail: String,
}

/// `a op factor × b` on medians, with a readable detail.
fn target(run: &Run, name: &str, a: (&str, &str), b: (&str, &str), at_least: bool, factor: f64) -> Target {
    let unit = run.units.get(a.1).map(String::as_str).unwrap_or("");
    for (mode, test) in [a, b] {
        if run.not_comparable(mode, test) {
            let lost = run.loss_behind(mode, test).unwrap_or(f64::NAN);
            let detail = format!("not comparable: {mode} lost {lost:.2} % of the replies behind its {test} (more than 1 %)");
            return Target { name: name.into(), verdict: None, detail };
        }
    }
    let (va, vb) = (run.median(a.0, a.1), run.median(b.0, b.1));
    match (va, vb) {
        (Some(x), Some(y)) if y != 0.0 => {
            let ok = if at_least { x >= factor * y } else { x <= factor * y };
            let u = display_unit(unit);
            Target {
                name: name.into(),
                verdict: Some(ok),
                detail: format!("{} {} {u} vs {} {} {u}: {:.2}×", a.0, fmt_value(x, unit), b.0, fmt_value(y, unit), x / y),
            }
        }
        _ => Target { name: name.into(), verdict: None, detail: format!("needs {} of `{}` and `{}`", a.1, a.0, b.0) },
    }
}

fn targets(run: &Run) -> Vec<Target> {
    let u = UDP_HEADLINE;
    let k = KERNEL_VXLAN;
    let mut t = vec![
        target(run, "uring TCP 1 stream ≥ 4× classic", (u, "tcp1"), (CLASSIC, "tcp1"), true, 4.0),
        target(run, "uring (offloads) TCP 1 stream ≥ 1.0× kernel VXLAN", (u, "tcp1"), (k, "tcp1"), true, 1.0),
        target(run, "uring (offloads) TCP 4 streams ≥ 1.0× kernel VXLAN", (u, "tcp4"), (k, "tcp4"), true, 1.0),
        target(run, "uring UDP 64 B delivered rate ≥ kernel VXLAN", (u, "udp64_pps"), (k, "udp64_pps"), true, 1.0),
        target(run, "uring RTT p50 at 50 % load ≤ 1.5× kernel VXLAN", (u, "lat50_p50"), (k, "lat50_p50"), false, 1.5),
        target(
            run,
            "uring CPU per Gbit/s, whole machine (TCP 1 stream) ≤ kernel VXLAN",
            (u, "tcp1_cpu_per_gbps"),
            (k, "tcp1_cpu_per_gbps"),
            false,
            1.0,
        ),
        target(
            run,
            "uring CPU per Gbit/s, whole machine (TCP 4 streams) ≤ kernel VXLAN",
            (u, "tcp4_cpu_per_gbps"),
            (k, "tcp4_cpu_per_gbps"),
            false,
            1.0,
        ),
    ];
    t.extend(wireguard_targets(run));
    if run.has_vxlan_backend() {
        for &(test, what) in VXLAN_TARGET_TESTS {
            t.push(same_ratio_target(
                run,
                &format!("encapd-vxlan {what}: ratio to vxlan-kernel at least as good as the udp backend's (uring)"),
                test,
            ));
        }
        for &(test, what) in VXLAN_TARGET_TESTS {
            t.push(mixed_target(
                run,
                &format!("encapd-vxlan-mixed {what}: no worse than the slower of vxlan-kernel and encapd-vxlan"),
                test,
            ));
        }
    }
    t
}

/// The wireguard backend's targets (issue 31), for a run that measured it
/// beside at least one userspace WireGuard pair: each figure against the
/// best of those pairs on that figure, and the moonshot against encapd's
/// own clear text.
fn wireguard_targets(run: &Run) -> Vec<Target> {
    if !run.has(WIREGUARD) {
        return Vec::new();
    }
    let userspace = [WIREGUARD_GO, BORINGTUN];
    let mut t: Vec<Target> = WIREGUARD_TARGETS
        .iter()
        .filter_map(|&(test, name, at_least, factor)| {
            let (best, _) = best_of(run, &userspace, test)?;
            Some(target(run, &format!("wireguard {name} (of {best})"), (WIREGUARD, test), (best, test), at_least, factor))
        })
        .collect();
    if !t.is_empty() {
        t.push(target(
            run,
            "wireguard TCP 1 stream ≥ 0.5× the udp backend's uring in clear text (the moonshot)",
            (WIREGUARD, "tcp1"),
            (UDP_HEADLINE, "tcp1"),
            true,
            0.5,
        ));
    }
    t
}

/// Issue 31's targets against the userspace pairs: (test, name, at
/// least (else at most), factor × the best userspace pair).
const WIREGUARD_TARGETS: &[(&str, &str, bool, f64)] = &[
    ("tcp1", "TCP 1 stream ≥ 5× the faster of wireguard-go and boringtun", true, 5.0),
    ("tcp4", "TCP 4 streams ≥ 5× the faster of wireguard-go and boringtun", true, 5.0),
    ("udp_rr_p50", "idle ping-pong p50 (sockperf) ≤ the faster of wireguard-go and boringtun", false, 1.0),
    ("tcp1_cpu_per_gbps", "CPU per Gbit/s, whole machine (TCP 1 stream) ≤ 0.5× the cheaper of wireguard-go and boringtun", false, 0.5),
];

/// The tests the vxlan backend's targets compare (issue 14): (test, name).
const VXLAN_TARGET_TESTS: &[(&str, &str)] =
    &[("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams"), ("udp64_pps", "UDP 64 B delivered rate"), ("lat50_p50", "RTT p50 at 50 % load")];

/// Whether more is better for `test` (throughput, packet rates) or less
/// (latency, CPU, loss, retransmits).
fn higher_is_better(test: &str) -> bool {
    !(test.starts_with("lat")
        || test.starts_with("udp_rr")
        || test.contains("cpu")
        || test.ends_with("_loss")
        || test.ends_with("_retrans")
        || test.ends_with("_per_gb"))
}

/// The first of `cells` (mode, test) whose median is not comparable, as a
/// target's detail.
fn not_comparable_detail(run: &Run, cells: &[(&str, &str)]) -> Option<String> {
    cells.iter().find(|(m, t)| run.not_comparable(m, t)).map(|&(mode, test)| {
        let lost = run.loss_behind(mode, test).unwrap_or(f64::NAN);
        format!("not comparable: {mode} lost {lost:.2} % of the replies behind its {test} (more than 1 %)")
    })
}

/// encapd-vxlan ÷ vxlan-kernel at least as good as uring ÷ vxlan-kernel
/// (the udp backend's ratio) on `test`.
fn same_ratio_target(run: &Run, name: &str, test: &str) -> Target {
    let (e, u, k) = (ENCAPD_VXLAN, UDP_HEADLINE, KERNEL_VXLAN);
    if let Some(detail) = not_comparable_detail(run, &[(e, test), (u, test), (k, test)]) {
        return Target { name: name.into(), verdict: None, detail };
    }
    match (run.median(e, test), run.median(u, test), run.median(k, test)) {
        (Some(ev), Some(uv), Some(kv)) if kv != 0.0 => {
            let (re, ru) = (ev / kv, uv / kv);
            let ok = if higher_is_better(test) { re >= ru } else { re <= ru };
            let unit = run.units.get(test).map(String::as_str).unwrap_or("");
            let detail = format!("{e} {:.2}× vs {u} {:.2}× of {k} ({} {})", re, ru, fmt_value(kv, unit), display_unit(unit));
            Target { name: name.into(), verdict: Some(ok), detail }
        }
        _ => Target { name: name.into(), verdict: None, detail: format!("needs {test} of `{e}`, `{u}` and `{k}`") },
    }
}

/// The slower (worse) of two modes on `test`, by median: (mode, median).
fn slower_of<'a>(run: &Run, a: &'a str, b: &'a str, test: &str) -> Option<(&'a str, f64)> {
    let (va, vb) = (run.median(a, test)?, run.median(b, test)?);
    let a_worse = if higher_is_better(test) { va <= vb } else { va >= vb };
    Some(if a_worse { (a, va) } else { (b, vb) })
}

/// encapd-vxlan-mixed no worse than the slower of vxlan-kernel and
/// encapd-vxlan on `test`.
fn mixed_target(run: &Run, name: &str, test: &str) -> Target {
    let (m, k, e) = (ENCAPD_VXLAN_MIXED, KERNEL_VXLAN, ENCAPD_VXLAN);
    if let Some(detail) = not_comparable_detail(run, &[(m, test), (k, test), (e, test)]) {
        return Target { name: name.into(), verdict: None, detail };
    }
    match (run.median(m, test), slower_of(run, k, e, test)) {
        (Some(mv), Some((slow, sv))) if sv != 0.0 => {
            let ok = if higher_is_better(test) { mv >= sv } else { mv <= sv };
            let unit = run.units.get(test).map(String::as_str).unwrap_or("");
            let u = display_unit(unit);
            let detail = format!("{m} {} {u} vs {slow} (the slower) {} {u}: {:.2}×", fmt_value(mv, unit), fmt_value(sv, unit), mv / sv);
            Target { name: name.into(), verdict: Some(ok), detail }
        }
        _ => Target { name: name.into(), verdict: None, detail: format!("needs {test} of `{m}`, `{k}` and `{e}`") },
    }
}

/// The vxlan backend's table: rows (test, header).
const VXLAN_ROWS: &[(&str, &str)] = &[
    ("tcp1", "TCP 1 stream Gbit/s"),
    ("tcp4", "TCP 4 streams Gbit/s"),
    ("udp64_pps", "UDP 64 B delivered kpps"),
    ("lat10_p50", "RTT p50 µs @10 %"),
    ("lat50_p50", "RTT p50 µs @50 %"),
    ("lat50_p99", "RTT p99 µs @50 %"),
    ("udp_rr_p50", "UDP ping-pong p50 µs (sockperf)"),
    ("tcp1_cpu_per_gbps", "CPU cores per Gbit/s, whole machine (TCP 1)"),
    ("tcp4_cpu_per_gbps", "CPU cores per Gbit/s, whole machine (TCP 4)"),
];

/// The vxlan backend against the kernel: medians of the three VXLAN modes,
/// encapd-vxlan ÷ vxlan-kernel next to the udp backend's uring ÷
/// vxlan-kernel, and the mixed pair ÷ the slower of the two. Empty when the
/// run did not measure the vxlan backend.
pub(crate) fn vxlan_table(run: &Run) -> String {
    let (k, e, m, u) = (KERNEL_VXLAN, ENCAPD_VXLAN, ENCAPD_VXLAN_MIXED, UDP_HEADLINE);
    if !run.has_vxlan_backend() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(s, "| test | {k} | {e} | {m} | {e} ÷ {k} | udp backend: {u} ÷ {k} | {m} ÷ the slower of {k} and {e} |");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for &(test, header) in VXLAN_ROWS {
        if !run.tests.iter().any(|t| t == test) {
            continue;
        }
        let unit = run.units.get(test).map(String::as_str).unwrap_or("");
        let mixed = match slower_of(run, k, e, test) {
            Some((slow, _)) => {
                let r = ratio_cell(run, m, slow, test);
                if r.ends_with('×') { format!("{r} (of {slow})") } else { r }
            }
            None => "n/a".into(),
        };
        let _ = writeln!(
            s,
            "| {header} | {} | {} | {} | {} | {} | {mixed} |",
            fmt_median(run, k, test, unit, false),
            fmt_median(run, e, test, unit, false),
            fmt_median(run, m, test, unit, false),
            ratio_cell(run, e, k, test),
            ratio_cell(run, u, k, test),
        );
    }
    s
}

/// What the vxlan table compares, under it.
const VXLAN_NOTE: &str = "vxlan-kernel: kernel VXLAN on both nodes, set up as flannel sets up `flannel.1` (VNI 1, port 8472, \
`nolearning`, static neighbour and FDB entries, route `via <peer .0> onlink`). encapd-vxlan: encapd's `vxlan` backend on both \
nodes (`uring`, offloads on, as the udp backend's headline `uring`). encapd-vxlan-mixed: encapd's `vxlan` backend on nodeA \
(the clients' side: it encapsulates the TCP data and the UDP load) and nodeB's flannel.1-style kernel VTEP left as flannel set \
it up for a kernel peer (encapd took over nodeA's VTEP MAC). Target: encapd-vxlan at the same ratios to vxlan-kernel as the \
udp backend's `uring` reaches, and the mixed pair no worse than the slower of the two (throughput: the lower; RTT and CPU: the \
higher).";

/// Per-repetition ratios to routing: these columns.
const REP_RATIOS: &[(&str, &str)] = &[
    ("tcp1", "TCP 1"),
    ("tcp1_cubic", "TCP 1 cubic"),
    ("tcp4", "TCP 4"),
    ("tcp4_cubic", "TCP 4 cubic"),
    ("udp64_pps", "UDP 64 B"),
    ("udp512_pps", "UDP 512 B"),
    ("udp1400_pps", "UDP 1400 B"),
    ("lat50_p50", "p50 @50 %"),
    ("lat50_p99", "p99 @50 %"),
    ("tcp1_cpu_per_gbps", "CPU/Gbit TCP 1"),
    ("tcp4_cpu_per_gbps", "CPU/Gbit TCP 4"),
];

fn header(runs: &Runs, out: &mut String) {
    let run = runs.first();
    let e = |k: &str| run.env(k).unwrap_or("n/a").to_string();
    let _ = writeln!(out, "# encapd benchmark report: {} on {}", e("started"), e("host"));
    out.push('\n');
    let _ = writeln!(out, "- kernel `{}`; CPU {} ({} CPUs)", e("kernel"), e("cpu"), e("nproc"));
    for line in provenance(run) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "- {}; encapd `workers = {}`", e("iperf3"), e("workers"));
    let reps = run.reps.len();
    // bench/run.sh records `mode_order` since it alternates the order
    // (runs from before say nothing of it).
    let order = match run.env("mode_order") {
        Some("alternating") => "modes interleaved within each, in reverse order in even ones",
        _ => "modes interleaved within each",
    };
    let _ = writeln!(
        out,
        "- modes: {}; {reps} repetition{} ({order}), wall time {} s",
        run.modes.join(", "),
        if reps == 1 { "" } else { "s" },
        e("elapsed_s")
    );
    let _ = writeln!(
        out,
        "- durations: TCP {} s, UDP {} s, latency probe {} s per load; TCP default congestion control `{}`",
        e("t_tcp"),
        e("t_udp"),
        e("t_lat"),
        e("tcp_cc_default")
    );
    let profiles: Vec<&str> = runs.profiles.iter().map(|r| r.profile.as_str()).collect();
    let how = if runs.profiled {
        "each mode on each, interleaved; bench/README.md says how each is made"
    } else {
        "a plain veth pair: the run predates the underlay profiles"
    };
    let _ = writeln!(out, "- underlay profile{}: {} ({how})", if profiles.len() == 1 { "" } else { "s" }, profiles.join(", "));
    if let Some(rev) = run.env("old_harness_rev") {
        let _ = writeln!(
            out,
            "- old harness: `bench/run.sh` of `{rev}` on the same modes (`M{OLD_HARNESS_SUFFIX}`, veth), interleaved with the new"
        );
    }
    let quiet = run.env("quiet").map(|q| format!(" ({q})")).unwrap_or_default();
    let _ = writeln!(out, "- load average before / after: {} / {}{quiet}", e("loadavg_start"), e("loadavg_end"));
    if let Some(inv) = run.env("invocation") {
        let _ = writeln!(out, "- command: `{inv}` (every command run is in `README.md` and `commands.log`)");
    }
    out.push('\n');
}

/// Where the run's code came from, as `env.txt` recorded it: the checked-out
/// commit and what was uncommitted, then each binary's sha256 and the commit
/// it says it was built from (runs before these were recorded say so).
pub(crate) fn provenance(run: &Run) -> Vec<String> {
    let head = run.env("git_head").unwrap_or("n/a");
    // bench/run.sh writes git_uncommitted (empty when clean) since it
    // records provenance; before, only a count of changed files.
    let recorded = run.env_recorded("git_uncommitted").is_some();
    let tree = match (run.env_recorded("git_uncommitted"), run.env("git_dirty_files")) {
        (Some(""), _) => "clean".to_string(),
        (Some(files), _) => {
            let files: Vec<&str> = files.split_whitespace().collect();
            format!("{} uncommitted: {}", files.len(), files.join(", "))
        }
        (None, Some(count)) => format!("{count} uncommitted or untracked files; not listed"),
        (None, None) => "uncommitted files not recorded".into(),
    };
    let mut lines = vec![format!("git revision `{head}` ({tree})")];
    for (name, key) in [("encapd", "encapd"), ("encapd-bench", "encapd_bench")] {
        let line = match (run.env(&format!("{key}_sha256")), run.env(&format!("{key}_build"))) {
            (Some(sha), build) => format!("{name} binary sha256 `{sha}`, built from `{}`", build.unwrap_or("unknown")),
            (None, _) if recorded => format!("{name} binary: not used by this run"),
            (None, _) => format!("{name} binary: not recorded (the run predates provenance records)"),
        };
        lines.push(line);
    }
    if let (Some(rev), Some(sha)) = (run.env("baseline_rev"), run.env("encapd_base_sha256")) {
        lines.push(format!(
            "baseline encapd (modes `*{BASELINE_SUFFIX}`) sha256 `{sha}`, built by bench/run.sh from `{rev}` in a clean worktree"
        ));
    }
    lines
}

/// What the headline's figures are, under its table.
const HEADLINE_NOTE: &str = "TCP: iperf3 receiver throughput with the kernel's default congestion control. \
UDP 64 B: iperf3 `-u -b 0 -l 64`, delivered packets per second as counted by the receiver. \
RTT: `encapd-bench latency` UDP request/response at 10 % and 50 % of the mode's own UDP 64 B delivered rate \
in the same repetition, measured from each request's intended send time (coordinated omission corrected); \
requests and replies both cross the tunnel, so at 50 % the path carries about its one-way capacity and queueing shows. \
Each RTT figure is followed by the replies lost in the repetition(s) its median comes from. \
CPU, whole machine: busy CPU time of the whole machine (`/proc/stat`: both gateways, iperf3 at both ends, the kernel's \
forwarding, and anything else that ran) during the TCP test, in cores, divided by Gbit/s. \
encapd CPU: user + system time of both encapd processes (`/proc/PID/stat`) over the same test, in cores, divided by Gbit/s \
(n/a for routing and vxlan-kernel, which run no encapd; for encapd-vxlan-mixed and encapd-vxlan-mixed-kernel, nodeA's encapd alone).";

/// Renders `dir/report.md` and its SVG charts from the run data in `dir`.
pub fn render(dir: &Path) -> Result<ReportSummary, ReportError> {
    let runs = read_runs(dir)?;
    let mut out = String::new();
    header(&runs, &mut out);
    let headline = headline_section(&runs, &mut out);
    let mut targets = Vec::new();
    out.push_str("## Targets\n\n");
    for run in &runs.profiles {
        let t = self::targets(run);
        if runs.multi() {
            let _ = writeln!(out, "### {} underlay\n", run.profile);
        }
        targets_list(&t, &mut out);
        targets.extend(t.into_iter().map(|t| if runs.multi() { Target { name: format!("[{}] {}", run.profile, t.name), ..t } } else { t }));
    }
    encrypted_section(&runs, &mut out);
    carried_section(&runs, &mut out);
    for (i, run) in runs.profiles.iter().enumerate() {
        cost_section(run, runs.multi(), i + 1 == runs.profiles.len(), &mut out);
    }
    for run in &runs.profiles {
        medians_section(run, runs.multi(), &mut out);
    }
    for run in &runs.profiles {
        rep_ratios_section(run, runs.multi(), &mut out);
    }

    out.push_str("## Charts\n\n");
    let mut charts = Vec::new();
    for run in &runs.profiles {
        let suffix = if runs.profiled { format!("-{}", run.profile) } else { String::new() };
        charts.extend(charts::write_all(dir, run, &suffix)?);
    }
    for c in &charts {
        let _ = writeln!(out, "### {}\n\n![{}]({})\n\n{}\n", c.title, c.title, c.file, c.note);
    }
    out.push_str("Absolute numbers drift on a shared machine; compare modes within one run and one profile.\n");

    let report = dir.join("report.md");
    std::fs::write(&report, &out).map_err(io_err(&report))?;
    Ok(ReportSummary {
        report,
        charts: charts.iter().map(|c| dir.join(&c.file)).collect(),
        modes: runs.modes(),
        targets: targets.into_iter().map(|t| (t.name, t.verdict)).collect(),
        headline,
    })
}

/// A heading's profile suffix when the run has several.
fn on(run: &Run, multi: bool) -> String {
    if multi { format!(", {} underlay", run.profile) } else { String::new() }
}

/// The headline table, its notes and the ratio tables; returns the table.
fn headline_section(runs: &Runs, out: &mut String) -> String {
    out.push_str("## Headline (medians)\n\n");
    if runs.multi() {
        out.push_str(
            "Each figure on every underlay profile, side by side (`[veth]`: a plain veth pair, which hands 64 KB \
super-packets across whole; `[wire]`: MTU-sized frames and GRO on receive, as on a NIC; bench/README.md says how each \
is made and what it does not model). Ratios are taken within a profile.\n\n",
        );
    }
    let headline = headline_table(runs);
    out.push_str(&headline);
    out.push('\n');
    out.push_str(HEADLINE_NOTE);
    out.push_str("\n\n");
    out.push_str(NOT_COMPARABLE_NOTE);
    out.push_str(" Ratios involving such a figure are `n/c`.\n\n");
    for base in [ROUTING, KERNEL_VXLAN] {
        if runs.profiles.iter().any(|r| r.has(base)) && runs.modes().len() > 1 {
            let _ = writeln!(out, "### Ratios of medians to {base}\n");
            out.push_str(&ratio_table(runs, base));
            out.push('\n');
        }
    }
    for run in &runs.profiles {
        let before_after = before_after_table(run);
        if !before_after.is_empty() {
            let _ = writeln!(
                out,
                "### After ÷ before: each mode against its baseline build (medians; per repetition below){}\n",
                on(run, runs.multi())
            );
            out.push_str(&before_after);
            out.push('\n');
            out.push_str(&before_after_note(&baseline_pairs(run)));
            out.push_str("\n\n");
        }
    }
    for run in &runs.profiles {
        let harness = harness_table(run);
        if !harness.is_empty() {
            let _ = writeln!(out, "### New harness ÷ old harness{}\n", on(run, runs.multi()));
            out.push_str(&harness);
            out.push('\n');
            out.push_str(HARNESS_NOTE);
            out.push_str("\n\n");
        }
    }
    for run in &runs.profiles {
        let vxlan = vxlan_table(run);
        if !vxlan.is_empty() {
            let _ = writeln!(out, "### The vxlan backend against kernel VXLAN (medians){}\n", on(run, runs.multi()));
            out.push_str(&vxlan);
            out.push('\n');
            out.push_str(VXLAN_NOTE);
            out.push_str("\n\n");
        }
    }
    headline
}

fn targets_list(targets: &[Target], out: &mut String) {
    for t in targets {
        let v = match t.verdict {
            Some(true) => "**PASS**",
            Some(false) => "**FAIL**",
            None => "n/a",
        };
        let _ = writeln!(out, "- {}: {v} ({})", t.name, t.detail);
    }
    out.push('\n');
}

/// The metrics the harness comparison divides: (test, name).
const HARNESS_METRICS: &[(&str, &str)] = &[
    ("tcp1", "TCP 1 stream"),
    ("tcp1_cubic", "TCP 1 stream, cubic"),
    ("tcp1_paced", "TCP 1 stream paced at 1 Gbit/s"),
    ("tcp4", "TCP 4 streams"),
    ("tcp4_cubic", "TCP 4 streams, cubic"),
    ("udp64_pps", "UDP 64 B delivered"),
    ("udp512_pps", "UDP 512 B delivered"),
    ("udp1400_pps", "UDP 1400 B delivered"),
    ("lat10_p50", "RTT p50 @10 %"),
    ("lat50_p50", "RTT p50 @50 %"),
    ("lat50_p99", "RTT p99 @50 %"),
    ("lat90_p50", "RTT p50 @90 %"),
    ("udp_rr_p50", "ping-pong p50 (sockperf)"),
    ("tcp1_cpu_per_gbps", "CPU per Gbit/s, whole machine (TCP 1)"),
    ("tcp4_cpu_per_gbps", "CPU per Gbit/s, whole machine (TCP 4)"),
    ("tcp1_encapd_cpu_per_gbps", "encapd CPU per Gbit/s (TCP 1)"),
    ("tcp1_paced_encapd_cpu_per_gbps", "encapd CPU per Gbit/s (TCP 1 paced)"),
];

const HARNESS_NOTE: &str = "`M-old`: mode `M` measured by the old shell harness (`bench/run.sh` of `old_harness_rev`, one \
invocation per mode and repetition) on the same encapd binary, interleaved with the new harness's run of `M` in every \
repetition. new ÷ old: the median of the repetitions' ratios (each pairs two measurements made minutes apart). Spread: \
(largest − smallest) ÷ median of one harness's own repetitions, the run-to-run noise of that figure. Agrees: new ÷ old is \
within the larger of the two spreads of 1.00× (n/a with fewer than 2 repetitions).";

/// (largest − smallest) ÷ median of `mode`'s repetitions of `test`;
/// `None` with fewer than two.
fn spread(run: &Run, mode: &str, test: &str) -> Option<f64> {
    let v: Vec<f64> = run.per_rep(mode, test)?.values().copied().collect();
    if v.len() < 2 {
        return None;
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    let m = median_of(v)?;
    (m != 0.0).then(|| (hi - lo) / m.abs())
}

/// Each mode measured by the new harness ÷ the same mode measured by the
/// old one, per metric, with the run-to-run noise of each. Empty when the
/// run has no old-harness measurements.
fn harness_table(run: &Run) -> String {
    let pairs = counterpart_pairs(run, OLD_HARNESS_SUFFIX);
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| mode | metric | new (median) | old (median) | new ÷ old (paired) | per repetition | spread, new | spread, old | agrees |\n\
         |---|---|---:|---:|---:|---|---:|---:|---|\n",
    );
    let (mut agree, mut decided) = (0, 0);
    for (mode, old) in &pairs {
        for &(test, name) in HARNESS_METRICS {
            if run.per_rep(mode, test).is_none() && run.per_rep(old, test).is_none() {
                continue;
            }
            let unit = run.units.get(test).map(String::as_str).unwrap_or("");
            let paired = if comparable_medians(run, mode, old, test) { paired_median(run, mode, old, test) } else { None };
            let reps: Vec<String> = run.reps.iter().map(|&r| rep_ratio(run, mode, old, r, test)).collect();
            let (sn, so) = (spread(run, mode, test), spread(run, old, test));
            let noise = match (sn, so) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            let verdict = match (paired, noise) {
                (Some(r), Some(n)) => {
                    decided += 1;
                    if (r - 1.0).abs() <= n {
                        agree += 1;
                        "yes"
                    } else {
                        "**no**"
                    }
                }
                _ => "n/a",
            };
            let pct = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |x| format!("{:.0} %", 100.0 * x));
            let _ = writeln!(
                s,
                "| {mode} | {name} | {} | {} | {} | {} | {} | {} | {verdict} |",
                fmt_median(run, mode, test, unit, false),
                fmt_median(run, old, test, unit, false),
                fmt_opt_ratio(paired),
                reps.join(" "),
                pct(sn),
                pct(so),
            );
        }
    }
    let _ = writeln!(s, "\n{agree} of {decided} decidable figures agree within the run's noise.");
    s
}

/// Whether neither median of `test` is over too many lost replies.
fn comparable_medians(run: &Run, a: &str, b: &str, test: &str) -> bool {
    !run.not_comparable(a, test) && !run.not_comparable(b, test)
}

/// The tests whose packets are attributed: (test, name).
const CARRIED_TESTS: &[(&str, &str)] = &[("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams"), ("udp64", "UDP 64 B")];

/// `a / b` of two medians as a cell (`–` when a side has no value).
fn pair_cell(run: &Run, mode: &str, a: &str, b: &str, fmt: fn(f64) -> String) -> String {
    let f = |t: &str| run.median(mode, t).map_or_else(|| "–".to_owned(), fmt);
    format!("{} / {}", f(a), f(b))
}

fn carried_table(run: &Run) -> String {
    let pct = |v: f64| if (0.05..99.95).contains(&v) { format!("{v:.1}") } else { format!("{v:.0}") };
    let per = |v: f64| format!("{v:.1}");
    let mut s = String::new();
    for m in &run.modes {
        for &(test, name) in CARRIED_TESTS {
            let has = |dir: &str| {
                ["encap_kernel_pct", "decap_kernel_pct", "gso_per_send", "gro_per_receive"]
                    .iter()
                    .any(|k| run.median(m, &format!("{test}_{dir}_{k}")).is_some())
            };
            if !has("fwd") && !has("rev") {
                continue;
            }
            let t = |dir: &str, k: &str| format!("{test}_{dir}_{k}");
            let _ = writeln!(
                s,
                "| {m} | {name} | {} | {} | {} | {} |",
                pair_cell(run, m, &t("fwd", "encap_kernel_pct"), &t("fwd", "decap_kernel_pct"), pct),
                pair_cell(run, m, &t("fwd", "gso_per_send"), &t("fwd", "gro_per_receive"), per),
                pair_cell(run, m, &t("rev", "encap_kernel_pct"), &t("rev", "decap_kernel_pct"), pct),
                pair_cell(run, m, &t("rev", "gso_per_send"), &t("rev", "gro_per_receive"), per),
            );
        }
    }
    if s.is_empty() {
        return s;
    }
    format!(
        "| mode | test | ctrA → ctrB: kernel path % (encap / decap) | ctrA → ctrB: datagrams per GSO send / per GRO receive | \
         ctrB → ctrA: kernel path % (encap / decap) | ctrB → ctrA: datagrams per GSO send / per GRO receive |\n|---|---|---:|---:|---:|---:|\n{s}"
    )
}

/// A section of one table per underlay profile (a heading per profile
/// when the run has several), then `note`; nothing when no profile has a
/// table.
fn per_profile_section(runs: &Runs, out: &mut String, title: &str, table: fn(&Run) -> String, note: &str) {
    let tables: Vec<(&Run, String)> = runs.profiles.iter().map(|r| (r, table(r))).filter(|(_, t)| !t.is_empty()).collect();
    if tables.is_empty() {
        return;
    }
    let _ = writeln!(out, "## {title} (medians)\n");
    for (run, table) in tables {
        if runs.multi() {
            let _ = writeln!(out, "### {} underlay\n", run.profile);
        }
        out.push_str(&table);
        out.push('\n');
    }
    out.push_str(note);
}

/// Who carried the packets, per profile: the kernel path or the workers,
/// and how well the workers batched.
fn carried_section(runs: &Runs, out: &mut String) {
    per_profile_section(
        runs,
        out,
        "Who carried the packets",
        carried_table,
        "From encapd's `/metrics` on every encapd node, read before and after the test. ctrA → ctrB is the data of every test \
(the clients run in ctrA); ctrB → ctrA carries TCP's ACKs. Each direction crosses two gateways: the encapsulating node and the \
decapsulating one (`–`: no encapd there, e.g. the kernel VTEP of the mixed pair). Kernel path %: the share of that crossing's \
packets that encapd's eBPF programs carried (`encapd_kernel_packets_total`); the workers carried the rest (0 %: the mode has no \
kernel path, or it stepped aside). Datagrams per GSO send: the encapsulating workers' datagrams per UDP send \
(`encapd_tx_packets_total ÷ encapd_tx_sends_total`; 1.0: no segmentation offload); per GRO receive: the decapsulating workers' \
datagrams per receive completion (`encapd_rx_packets_total ÷ encapd_rx_receives_total`; 1.0: no coalescing on receive). A \
figure the workers had no packets for is `–`.\n\n",
    );
}

/// The columns of the encrypted overlays' table: (test, header, unit).
const ENCRYPTED_COLUMNS: [(&str, &str, &str); 5] = [
    ("tcp1", "TCP 1 stream Gbit/s", "Gbit/s"),
    ("tcp4", "TCP 4 streams Gbit/s", "Gbit/s"),
    ("udp64_pps", "UDP 64 B kpps", "pps"),
    ("lat50_p50", "RTT p50 µs @50 %", "us"),
    ("tcp1_cpu_per_gbps", "CPU cores per Gbit/s, whole machine (TCP 1)", "cores/(Gbit/s)"),
];

/// Of the modes `among` that have `test`, the best one (highest
/// throughput, lowest RTT or CPU) and its median.
fn best_of<'a>(run: &Run, among: &[&'a str], test: &str) -> Option<(&'a str, f64)> {
    let v = among.iter().filter_map(|m| Some((*m, run.median(m, test)?)));
    if higher_is_better(test) { v.max_by(|a, b| a.1.total_cmp(&b.1)) } else { v.min_by(|a, b| a.1.total_cmp(&b.1)) }
}

/// The encrypted overlays (WireGuard) side by side, per profile (see
/// [`encrypted_table`]); nothing when the run has none.
fn encrypted_section(runs: &Runs, out: &mut String) {
    per_profile_section(
        runs,
        out,
        "Encrypted overlays",
        encrypted_table,
        "The same tests as every mode (see the medians below). Carried by: the program that encrypts and decrypts the packets; \
`wireguard-go` and `boringtun` run on both nodes with `flannel-wg` laid out as flanneld's `wireguard` backend lays it out \
(port 51820, MTU underlay − 80, peer = the other node's subnet; bench/README.md, \"Encrypted overlays\"). encapd's own figures \
(its CPU, context switches, who carried the packets) do not exist for the modes encapd does not carry; the whole-machine CPU \
counts their daemons.\n\n",
    );
}

/// One profile's encrypted overlays: a row per mode of the family with
/// what carried it, its figures and, when the run has `uring`, its
/// throughput ÷ encapd's clear text; an encrypted mode that encapd
/// carries (its `wireguard` backend) is then divided by
/// the best of the userspace implementations, figure by figure. Empty
/// without such modes.
fn encrypted_table(run: &Run) -> String {
    let modes: Vec<&str> = run
        .modes
        .iter()
        .map(String::as_str)
        .filter(|m| family_of(m) == Some(Family::EncryptedOverlay) && !m.ends_with(OLD_HARNESS_SUFFIX))
        .collect();
    if modes.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let clear = run.has(UDP_HEADLINE);
    let mut head: Vec<String> = ENCRYPTED_COLUMNS.iter().map(|c| c.1.to_owned()).collect();
    if clear {
        head.extend([format!("TCP 1 ÷ {UDP_HEADLINE} (clear text)"), format!("TCP 4 ÷ {UDP_HEADLINE} (clear text)")]);
    }
    let _ = writeln!(s, "| mode | carried by | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(head.len()));
    for m in &modes {
        let by = Mode::named(m).map_or("?", |x| x.carried_by());
        let mut cells: Vec<String> = ENCRYPTED_COLUMNS.iter().map(|&(t, _, u)| fmt_median(run, m, t, u, false)).collect();
        if clear {
            cells.extend(["tcp1", "tcp4"].map(|t| ratio_cell(run, m, UDP_HEADLINE, t)));
        }
        let _ = writeln!(s, "| {m} | {by} | {} |", cells.join(" | "));
    }
    let userspace: Vec<&str> = modes.iter().copied().filter(|m| Mode::named(m).is_ok_and(|x| x.userspace_wg().is_some())).collect();
    for m in modes.iter().filter(|m| Mode::named(m).is_ok_and(|x| x.userspace_wg().is_none())) {
        let parts: Vec<String> = ENCRYPTED_COLUMNS
            .iter()
            .map(|&(t, h, _)| match best_of(run, &userspace, t) {
                Some((best, _)) => format!("{h} {} (of {best})", ratio_cell(run, m, best, t)),
                None => format!("{h} n/a"),
            })
            .collect();
        let _ = writeln!(s, "\n- `{m}` against the best userspace implementation of each figure: {}.", parts.join("; "));
    }
    s
}

/// What each mode's TCP tests cost: the whole machine's CPU and encapd's
/// own (CPU and context switches), so that the cost of each engine shows.
fn cost_section(run: &Run, multi: bool, with_note: bool, out: &mut String) {
    let _ = writeln!(out, "## CPU and context switches (medians){}\n", on(run, multi));
    let cols: [(&str, &str, &str); 7] = [
        ("", "Gbit/s", "Gbit/s"),
        ("_cpu", "whole machine, cores", "cores"),
        ("_cpu_per_gbps", "whole machine, cores per Gbit/s", "cores/(Gbit/s)"),
        ("_encapd_cpu", "encapd, cores", "cores"),
        ("_encapd_cpu_per_gbps", "encapd, cores per Gbit/s", "cores/(Gbit/s)"),
        ("_encapd_cs_vol_per_gb", "encapd voluntary context switches per GB", "per GB"),
        ("_encapd_cs_invol_per_gb", "encapd involuntary context switches per GB", "per GB"),
    ];
    let _ = writeln!(out, "| mode | test | {} |", cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(cols.len()));
    for test in ["tcp1", "tcp1_paced", "tcp4"] {
        // Runs before tcp1_paced existed have no rows for it.
        if !run.tests.iter().any(|t| t == test) {
            continue;
        }
        for m in &run.modes {
            let cells: Vec<String> =
                cols.iter().map(|(suffix, _, unit)| fmt_opt(run.median(m, &format!("{test}{suffix}")), unit)).collect();
            let _ = writeln!(out, "| {m} | {test} | {} |", cells.join(" | "));
        }
    }
    out.push('\n');
    if with_note {
        out.push_str(COST_NOTE);
    }
}

const COST_NOTE: &str = "Whole machine: `/proc/stat` busy time, everything that ran (see above). encapd: the encapd processes \
only (both nodes', nodeA's alone in the encapd-vxlan-mixed modes), `/proc/PID/stat` user + system time; context switches summed \
over every thread (`/proc/PID/task/*/status`, `voluntary_ctxt_switches`: a thread waited, e.g. for packets; \
`nonvoluntary_ctxt_switches`: it was preempted), per GB (10⁹ bytes) that iperf3 received. tcp1_paced: one stream held at 1 Gbit/s \
(`iperf3 -b 1G`), so that every mode does the same work and its CPU per Gbit/s is a cost, not an outcome of how its saturation \
went; at that load the whole-machine figure is not meaningful (`/proc/stat` is sampled at the timer tick, which misses the short \
bursts of a mostly idle CPU: it can read less than encapd's own time, which the scheduler measures exactly). n/a: not measured \
(routing and vxlan-kernel run no encapd; the encapd-vxlan-mixed modes run one, on nodeA; runs before these figures were \
recorded).\n\n";

/// Every test's median: tests as rows, modes as columns.
fn medians_section(run: &Run, multi: bool, out: &mut String) {
    let _ = writeln!(out, "## Medians per mode and test{}\n", on(run, multi));
    let _ = writeln!(out, "| test | unit | {} |", run.modes.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(run.modes.len()));
    for t in &run.tests {
        let unit = run.units.get(t).map(String::as_str).unwrap_or("");
        let cells: Vec<String> = run.modes.iter().map(|m| fmt_median(run, m, t, unit, false)).collect();
        let _ = writeln!(out, "| {t} | {} | {} |", display_unit(unit), cells.join(" | "));
    }
    out.push('\n');
    out.push_str(
        "`_retrans`: TCP retransmits (sender); `_cpu`: busy cores during the test; `_sent_pps`: iperf3 send rate; \
`lat<N>_*`: probe at N % of the mode's UDP 64 B delivered rate (`_offered_pps` requested, `_achieved_pps` sent, \
`_lost` replies not back within 1 s, `_loss` in %); `_fwd_*`, `_rev_*`: who carried the packets (see above). \
`n/a`: not measured or failed. ",
    );
    out.push_str(NOT_COMPARABLE_NOTE);
    out.push_str("\n\n");
}

/// Each mode ÷ routing within every repetition.
fn rep_ratios_section(run: &Run, multi: bool, out: &mut String) {
    if !run.has(ROUTING) || run.modes.len() < 2 {
        return;
    }
    let _ = writeln!(out, "## Ratios to plain routing, per repetition{}\n", on(run, multi));
    out.push_str(
        "Each cell is mode ÷ routing within the same repetition (throughput: higher is better; RTT and CPU: lower is better; \
`n/c`: a latency figure over more than 1 % lost replies on either side).\n\n",
    );
    let cols: Vec<&(&str, &str)> = REP_RATIOS.iter().filter(|(t, _)| run.tests.iter().any(|x| x == t)).collect();
    let _ = writeln!(out, "| mode | rep | {} |", cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|---:|{}", "---:|".repeat(cols.len()));
    for m in run.modes.iter().filter(|m| *m != ROUTING) {
        for &rep in &run.reps {
            let cell = |t: &str| {
                if run.rep_not_comparable(m, rep, t) || run.rep_not_comparable(ROUTING, rep, t) {
                    "n/c".to_string()
                } else {
                    fmt_ratio(run.value(m, rep, t), run.value(ROUTING, rep, t))
                }
            };
            let cells: Vec<String> = cols.iter().map(|(t, _)| cell(t)).collect();
            let _ = writeln!(out, "| {m} | {rep} | {} |", cells.join(" | "));
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_order_is_fixed() {
        let t = |v: &[&str]| order_tests(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            t(&["zzz", "lat90_p50", "udp64_pps", "lat10_loss", "lat10_p99", "tcp4", "tcp1_cpu", "tcp1", "lat10_p50", "aaa"]),
            ["tcp1", "tcp1_cpu", "tcp4", "udp64_pps", "lat10_p50", "lat10_p99", "lat10_loss", "lat90_p50", "aaa", "zzz"]
        );
    }

    #[test]
    fn medians_and_median_rep() {
        let mut run = Run::default();
        let key = ("m".to_string(), "t".to_string());
        run.values.insert(key.clone(), BTreeMap::from([(1, 3.0), (2, 1.0), (3, 2.0)]));
        assert_eq!(run.median("m", "t"), Some(2.0));
        assert_eq!(run.median_rep("m", "t"), Some(3));
        run.values.insert(key, BTreeMap::from([(1, 3.0), (2, 1.0)]));
        assert_eq!(run.median("m", "t"), Some(2.0));
        assert_eq!(run.median_rep("m", "t"), Some(2));
        assert_eq!(run.median("m", "x"), None);
    }

    fn run_with_env(pairs: &[(&str, &str)]) -> Run {
        Run { env: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Run::default() }
    }

    #[test]
    fn header_says_whether_the_mode_order_alternated() {
        let mut out = String::new();
        header(&Runs { profiles: vec![run_with_env(&[("mode_order", "alternating")])], profiled: false }, &mut out);
        assert!(out.contains("(modes interleaved within each, in reverse order in even ones)"), "{out}");
        let mut out = String::new();
        header(&Runs { profiles: vec![run_with_env(&[])], profiled: false }, &mut out);
        assert!(out.contains("(modes interleaved within each)"), "an older run says nothing of the order: {out}");
    }

    #[test]
    fn provenance_says_what_was_recorded() {
        let sha = "a".repeat(64);
        let clean = run_with_env(&[
            ("git_head", "c0ffee"),
            ("git_dirty_files", "0"),
            ("git_uncommitted", ""),
            ("encapd_bench_sha256", &sha),
            ("encapd_bench_build", "c0ffee"),
        ]);
        assert_eq!(
            provenance(&clean),
            [
                "git revision `c0ffee` (clean)".to_string(),
                "encapd binary: not used by this run".to_string(),
                format!("encapd-bench binary sha256 `{sha}`, built from `c0ffee`"),
            ]
        );
        let dirty = run_with_env(&[("git_head", "c0ffee"), ("git_uncommitted", "README.md src/x.rs")]);
        assert_eq!(provenance(&dirty)[0], "git revision `c0ffee` (2 uncommitted: README.md, src/x.rs)");
        let old = run_with_env(&[("git_head", "c0ffee"), ("git_dirty_files", "3")]);
        assert_eq!(provenance(&old)[0], "git revision `c0ffee` (3 uncommitted or untracked files; not listed)");
        assert_eq!(provenance(&old)[1], "encapd binary: not recorded (the run predates provenance records)");
    }

    /// A run of the vxlan modes and uring with one repetition: (mode, test, value).
    fn run_of(values: &[(&str, &str, f64)]) -> Run {
        let mut run = Run { reps: vec![1], ..Run::default() };
        for &(mode, test, v) in values {
            if !run.modes.iter().any(|m| m == mode) {
                run.modes.push(mode.to_string());
            }
            if !run.tests.iter().any(|t| t == test) {
                run.tests.push(test.to_string());
            }
            let unit = if test.starts_with("tcp") {
                "Gbit/s"
            } else if test.starts_with("lat") {
                "us"
            } else {
                "pps"
            };
            run.units.insert(test.to_string(), unit.to_string());
            run.values.insert((mode.to_string(), test.to_string()), BTreeMap::from([(1, v)]));
        }
        run
    }

    #[test]
    fn old_kernel_vxlan_name_is_read_as_vxlan_kernel() {
        assert_eq!(canonical_mode("vxlan"), KERNEL_VXLAN);
        assert_eq!(canonical_mode("encapd-vxlan"), "encapd-vxlan");
        let dir = std::env::temp_dir().join(format!("encapd-report-oldname-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("env.txt"), "modes=routing vxlan\n").unwrap();
        std::fs::write(dir.join("results.csv"), "mode,rep,test,value,unit\nvxlan,1,tcp1,10,Gbit/s\nrouting,1,tcp1,20,Gbit/s\n").unwrap();
        let runs = read_runs(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!runs.profiled && runs.profiles.len() == 1, "an old run is one profile");
        let run = runs.first();
        assert_eq!((run.profile.as_str(), run.raw_dir.as_str()), ("veth", "raw"));
        assert_eq!(run.modes, ["routing", KERNEL_VXLAN]);
        assert_eq!(run.median(KERNEL_VXLAN, "tcp1"), Some(10.0));
        assert_eq!(run.recorded_name(KERNEL_VXLAN), "vxlan");
        assert_eq!(run.recorded_name("routing"), "routing");
    }

    #[test]
    fn vxlan_backend_is_compared_with_the_kernel_pair_and_the_udp_ratio() {
        let run = run_of(&[
            (KERNEL_VXLAN, "tcp1", 10.0),
            (ENCAPD_VXLAN, "tcp1", 6.0),
            (ENCAPD_VXLAN_MIXED, "tcp1", 5.0),
            (UDP_HEADLINE, "tcp1", 5.0),
            (KERNEL_VXLAN, "lat50_p50", 50.0),
            (ENCAPD_VXLAN, "lat50_p50", 100.0),
            (ENCAPD_VXLAN_MIXED, "lat50_p50", 90.0),
            (UDP_HEADLINE, "lat50_p50", 150.0),
        ]);
        let table = vxlan_table(&run);
        assert!(table.contains("| TCP 1 stream Gbit/s | 10.00 | 6.00 | 5.00 | 0.60× | 0.50× | 0.83× (of encapd-vxlan) |"), "{table}");
        assert!(table.contains("| RTT p50 µs @50 % | 50.0 | 100 | 90.0 | 2.00× | 3.00× | 0.90× (of encapd-vxlan) |"), "{table}");
        assert!(!table.contains("TCP 4"), "rows only for measured tests:\n{table}");
        let t = targets(&run);
        let verdict = |prefix: &str| t.iter().find(|t| t.name.starts_with(prefix)).map(|t| t.verdict);
        assert_eq!(verdict("encapd-vxlan TCP 1 stream"), Some(Some(true)), "0.60× ≥ 0.50×");
        assert_eq!(verdict("encapd-vxlan RTT p50"), Some(Some(true)), "2.00× ≤ 3.00×");
        assert_eq!(verdict("encapd-vxlan-mixed TCP 1 stream"), Some(Some(false)), "5 < 6 (encapd-vxlan, the slower)");
        assert_eq!(verdict("encapd-vxlan-mixed RTT p50"), Some(Some(true)), "90 ≤ 100");
        assert_eq!(verdict("encapd-vxlan TCP 4 streams"), Some(None), "not measured");
        // A run without the vxlan backend has neither the table nor its targets.
        let udp_only = run_of(&[(KERNEL_VXLAN, "tcp1", 10.0), (UDP_HEADLINE, "tcp1", 5.0)]);
        assert!(vxlan_table(&udp_only).is_empty());
        assert!(targets(&udp_only).iter().all(|t| !t.name.contains("encapd-vxlan")));
    }

    #[test]
    fn encrypted_overlays_say_who_carried_them_and_compare_with_clear_text() {
        let run = run_of(&[
            (UDP_HEADLINE, "tcp1", 8.0),
            (UDP_HEADLINE, "tcp4", 6.0),
            (WIREGUARD_GO, "tcp1", 0.4),
            (WIREGUARD_GO, "tcp4", 0.6),
            (BORINGTUN, "tcp1", 0.32),
        ]);
        let table = encrypted_table(&run);
        assert!(table.contains("| mode | carried by | TCP 1 stream Gbit/s |"), "{table}");
        assert!(table.contains("| wireguard-go | wireguard-go | 0.40 | 0.60 | n/a | n/a | n/a | 0.05× | 0.10× |"), "{table}");
        assert!(table.contains("| boringtun | boringtun | 0.32 | n/a |"), "{table}");
        assert!(!table.contains("| uring |"), "clear text is the divisor, not a row:\n{table}");
        assert_eq!(best_of(&run, &[WIREGUARD_GO, BORINGTUN], "tcp1"), Some((WIREGUARD_GO, 0.4)));
        assert!(encrypted_table(&run_of(&[(UDP_HEADLINE, "tcp1", 8.0)])).is_empty(), "no encrypted modes, no table");
    }

    #[test]
    fn the_wireguard_backend_is_held_to_issue_31s_targets() {
        let run = run_of(&[
            (UDP_HEADLINE, "tcp1", 6.0),
            (WIREGUARD, "tcp1", 4.0),
            (WIREGUARD, "tcp4", 1.0),
            (WIREGUARD, "tcp1_cpu_per_gbps", 0.4),
            (WIREGUARD_GO, "tcp1", 0.4),
            (WIREGUARD_GO, "tcp4", 0.3),
            (WIREGUARD_GO, "tcp1_cpu_per_gbps", 1.0),
            (BORINGTUN, "tcp1", 0.6),
            (BORINGTUN, "tcp1_cpu_per_gbps", 0.9),
        ]);
        let t = wireguard_targets(&run);
        let verdict = |prefix: &str| t.iter().find(|t| t.name.starts_with(prefix)).map(|t| (t.verdict, t.name.clone()));
        let (v, name) = verdict("wireguard TCP 1 stream ≥ 5×").unwrap();
        assert_eq!(v, Some(true), "4.0 ≥ 5 × 0.6, against boringtun, the faster: {name}");
        assert!(name.ends_with("(of boringtun)"), "{name}");
        assert_eq!(verdict("wireguard TCP 4 streams").unwrap().0, Some(false), "1.0 < 5 × 0.3");
        assert_eq!(verdict("wireguard CPU per Gbit/s").unwrap().0, Some(true), "0.4 ≤ 0.5 × 0.9, the cheaper");
        assert!(verdict("wireguard idle ping-pong").is_none(), "no sockperf figures, no target");
        assert_eq!(verdict("wireguard TCP 1 stream ≥ 0.5× the udp").unwrap().0, Some(true), "4.0 ≥ 0.5 × 6.0");
        assert!(wireguard_targets(&run_of(&[(UDP_HEADLINE, "tcp1", 6.0)])).is_empty(), "no wireguard mode, no targets");
    }

    #[test]
    fn each_mode_is_divided_by_its_baseline_build() {
        let mut run = run_of(&[
            (KERNEL_VXLAN, "tcp1", 10.0),
            ("uring-base", "tcp1", 4.0),
            ("uring", "tcp1", 5.0),
            ("uring-base", "lat50_p50", 200.0),
            ("uring", "lat50_p50", 100.0),
            ("mmsg", "tcp1", 3.0),
        ]);
        run.reps = vec![1, 2];
        run.values.get_mut(&("uring".to_string(), "tcp1".to_string())).unwrap().insert(2, 2.0);
        run.values.get_mut(&("uring-base".to_string(), "tcp1".to_string())).unwrap().insert(2, 4.0);
        assert_eq!(baseline_pairs(&run), [("uring", "uring-base".to_string())], "mmsg has no baseline, the kernel pair none");
        let table = before_after_table(&run);
        assert!(
            table.contains("| uring ÷ uring-base | median | 0.88× | n/a | n/a | n/a | 0.50× |"),
            "TCP 3.5 ÷ 4, RTT 100 ÷ 200:\n{table}"
        );
        assert!(table.contains("| | 1 | 1.25× |"), "{table}");
        assert!(table.contains("| | 2 | 0.50× |"), "{table}");
        assert!(before_after_table(&run_of(&[("uring", "tcp1", 1.0)])).is_empty());
    }

    #[test]
    fn uring_without_cooperative_task_work_is_divided_by_the_uring_baseline() {
        let run =
            run_of(&[("uring-base", "tcp1", 4.0), ("uring", "tcp1", 5.0), ("uring-nocoop", "tcp1", 2.0), ("uring-trust", "tcp1", 6.0)]);
        assert_eq!(
            baseline_pairs(&run),
            [("uring", "uring-base".to_string()), ("uring-nocoop", "uring-base".to_string())],
            "uring-trust has no baseline of its own"
        );
        assert!(before_after_table(&run).contains("| uring-nocoop ÷ uring-base | median | 0.50× |"), "{}", before_after_table(&run));
        assert!(
            before_after_note(&baseline_pairs(&run))
                .ends_with("differs in one setting too: cooperative task work off, as in every build from before bc481df.")
        );
        let without = run_of(&[("uring-base", "tcp1", 4.0), ("uring", "tcp1", 5.0)]);
        assert_eq!(before_after_note(&baseline_pairs(&without)), BEFORE_AFTER_NOTE, "no pair differs in a setting");
    }

    #[test]
    fn paired_ratios_keep_each_repetition_together() {
        let mut run = run_of(&[("mmsg-base", "tcp1", 2.0), ("mmsg", "tcp1", 1.0)]);
        run.reps = vec![1, 2, 3];
        for (rep, after, before) in [(2, 2.0, 4.0), (3, 9.0, 3.0)] {
            run.values.get_mut(&("mmsg".to_string(), "tcp1".to_string())).unwrap().insert(rep, after);
            run.values.get_mut(&("mmsg-base".to_string(), "tcp1".to_string())).unwrap().insert(rep, before);
        }
        let table = before_after_table(&run);
        assert!(table.contains("| mmsg ÷ mmsg-base | median | 0.67× |"), "median 2 ÷ median 3:\n{table}");
        assert!(table.contains("| | paired | 0.50× |"), "median of 0.5, 0.5 and 3:\n{table}");
        assert_eq!(paired_median(&run, "mmsg", "mmsg-base", "tcp4"), None, "nothing measured");
    }

    #[test]
    fn before_and_after_compare_encapd_cost_at_the_paced_rate() {
        let run = run_of(&[
            ("mmsg-base", "tcp1_paced_encapd_cpu_per_gbps", 0.40),
            ("mmsg", "tcp1_paced_encapd_cpu_per_gbps", 0.30),
            ("mmsg-base", "tcp1_encapd_cpu_per_gbps", 0.20),
            ("mmsg", "tcp1_encapd_cpu_per_gbps", 0.25),
        ]);
        let table = before_after_table(&run);
        let header = table.lines().next().unwrap();
        assert!(
            header.ends_with("| encapd CPU cores per Gbit/s (TCP 1) | encapd CPU cores per Gbit/s (TCP 1 paced at 1 Gbit/s) |"),
            "{header}"
        );
        let median = table.lines().find(|l| l.contains("| median |")).unwrap();
        assert!(median.ends_with("| 1.25× | 0.75× |"), "0.25 ÷ 0.20, 0.30 ÷ 0.40: {median}");
    }

    #[test]
    fn values_format_by_unit() {
        assert_eq!(fmt_value(12.345, "Gbit/s"), "12.35");
        assert_eq!(fmt_value(65432.0, "pps"), "65.4");
        assert_eq!(fmt_value(42.26, "us"), "42.3");
        assert_eq!(fmt_value(1234.6, "us"), "1235");
        assert_eq!(fmt_ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(fmt_ratio(Some(1.0), None), "n/a");
    }
}
