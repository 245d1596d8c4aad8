//! The README's performance figures, generated from a benchmark run so that
//! they cannot drift from the evidence: [`block`] renders the Markdown that
//! sits between [`BEGIN`] and [`END`] in README.md, [`newest_committed_run`]
//! says which run it must come from, and `tests/readme_perf.rs` fails when
//! the README's block differs from what that run renders.
//!
//! **The newest committed run** is, among the directories
//! `bench/runs/<name>/` whose `results.csv` and `env.txt` git tracks, those
//! whose name starts with the UTC start time `YYYY-MM-DD-HHMM-` (what
//! `bench/run.sh` names them) and that are **full runs**, the one whose name
//! sorts last (the name starts with the time, so the last is the newest; a
//! second run in the same minute gets a `-2` suffix and sorts after). A full
//! run measured at least the udp backend's comparison ([`all_modes`]:
//! `routing vxlan-kernel classic mmsg-nooffload mmsg uring-nooffload uring`,
//! the kernel pair named `vxlan` in runs before the vxlan backend) in at
//! least 3 repetitions with the full test durations (TCP 5 s, UDP 2 s,
//! latency 3 s per load), as `env.txt` records: what `bench/run.sh` does
//! without `--quick`, `--short` or `--modes`. Since the vxlan backend that
//! default run also measures [`vxlan_backend_modes`], and the block shows
//! them (rows, and a finding on their ratios) when the run has them; runs
//! before it still qualify.
//! "Tracked" means in git's index, so `git add` is enough to make a new run
//! the README's source before the commit that adds both. Outside a git
//! checkout (an exported tree holds committed files only) every run
//! directory present counts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use encapd_testbed::mode::{Family, MODES, Mode};

use super::{
    CLASSIC, ENCAPD_VXLAN, ENCAPD_VXLAN_KERNEL, ENCAPD_VXLAN_MIXED, ENCAPD_VXLAN_MIXED_KERNEL, KERNEL_PATH, KERNEL_VXLAN,
    OLD_HARNESS_SUFFIX, ReportError, Run, Runs, UDP_HEADLINE, canonical_mode, family_of, fmt_median, provenance, ratio_cell, read_runs,
    slower_of, targets,
};

/// The line that opens the generated block in README.md.
pub const BEGIN: &str = "<!-- perf:begin -->";
/// The line that closes it.
pub const END: &str = "<!-- perf:end -->";

/// Where benchmark runs live, relative to the repository root.
pub const RUNS_DIR: &str = "bench/runs";

/// The modes a full run must have measured, in the registry's order: the
/// udp backend's comparison (the references and the udp backend's engines
/// of the default run).
pub fn all_modes() -> Vec<&'static str> {
    MODES.iter().filter(|d| d.in_default_run && matches!(d.family, Family::Reference | Family::UdpEngine)).map(|d| d.name).collect()
}

/// The vxlan backend's modes, which the default run measures after
/// [`all_modes`] (runs before the vxlan backend did not).
pub fn vxlan_backend_modes() -> Vec<&'static str> {
    MODES.iter().filter(|d| d.in_default_run && d.family == Family::VxlanBackend).map(|d| d.name).collect()
}

/// Whether `env.txt` (as key=value pairs) describes a full run: the modes
/// of [`all_modes`], at least 3 repetitions, the full durations, and for
/// a run since the underlay profiles the `wire` profile among them (the
/// README's figures come from it; a run from before has none and counts).
pub fn is_full_run(env: &[(String, String)]) -> bool {
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let modes: BTreeSet<&str> = get("modes").unwrap_or("").split_whitespace().map(canonical_mode).collect();
    let wire = get("underlays").is_none_or(|u| u.split_whitespace().any(|p| p == "wire"));
    all_modes().iter().all(|m| modes.contains(m))
        && wire
        && num("reps") >= 3.0
        && num("t_tcp") >= 5.0
        && num("t_udp") >= 2.0
        && num("t_lat") >= 3.0
}

/// A run directory name that starts with `YYYY-MM-DD-HHMM-`.
fn is_dated(name: &str) -> bool {
    let b = name.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.len() > 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'-'
        && digits(11..15)
        && b[15] == b'-'
}

/// Run directories (names under `bench/runs/`) whose `results.csv` and
/// `env.txt` git tracks; None when `repo` is not the top of a git checkout.
fn tracked_runs(repo: &Path) -> Option<BTreeSet<String>> {
    let top = git(repo, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(top.trim()).ok()? != std::fs::canonicalize(repo).ok()? {
        return None;
    }
    let files = git(repo, &["ls-files", "--", RUNS_DIR])?;
    let mut found: std::collections::BTreeMap<String, u8> = Default::default();
    for f in files.lines() {
        let Some(rest) = f.strip_prefix(RUNS_DIR).and_then(|r| r.strip_prefix('/')) else { continue };
        match rest.split_once('/') {
            Some((name, "results.csv")) => *found.entry(name.to_string()).or_default() |= 1,
            Some((name, "env.txt")) => *found.entry(name.to_string()).or_default() |= 2,
            _ => {}
        }
    }
    Some(found.into_iter().filter(|&(_, bits)| bits == 3).map(|(name, _)| name).collect())
}

/// Run directories present on disk (for a tree outside git).
fn present_runs(repo: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(repo.join(RUNS_DIR)) else { return BTreeSet::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("results.csv").is_file() && e.path().join("env.txt").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The newest committed full run (see the module documentation), as a
/// path relative to `repo` (`bench/runs/<name>`).
pub fn newest_committed_run(repo: &Path) -> Result<PathBuf, String> {
    let candidates = tracked_runs(repo).unwrap_or_else(|| present_runs(repo));
    for name in candidates.iter().rev().filter(|n| is_dated(n)) {
        let dir = repo.join(RUNS_DIR).join(name);
        let env = super::read_env(&dir.join("env.txt")).map_err(|e| e.to_string())?;
        if is_full_run(&env) {
            return Ok(Path::new(RUNS_DIR).join(name));
        }
    }
    Err(format!("no committed full run under {}", repo.join(RUNS_DIR).display()))
}

/// How the README names each mode: the registry's description.
fn mode_label(mode: &str) -> String {
    if let Some(m) = mode.strip_suffix(OLD_HARNESS_SUFFIX) {
        return format!("{}, measured by the old harness", mode_label(m));
    }
    Mode::named(mode).map_or_else(|_| format!("`{mode}`"), |m| m.description())
}

/// The README's columns: (test, header, unit).
const COLUMNS: [(&str, &str, &str); 7] = [
    ("tcp1", "TCP 1 stream Gbit/s", "Gbit/s"),
    ("tcp4", "TCP 4 streams Gbit/s", "Gbit/s"),
    ("udp64_pps", "UDP 64 B delivered kpps", "pps"),
    ("lat50_p50", "RTT p50 µs at 50 % load (replies lost)", "us"),
    ("tcp1_cpu_per_gbps", "CPU cores per Gbit/s, whole machine (TCP 1)", "cores/(Gbit/s)"),
    ("tcp1_encapd_cpu_per_gbps", "encapd's own CPU cores per Gbit/s (TCP 1)", "cores/(Gbit/s)"),
    ("tcp1_encapd_cs_vol_per_gb", "encapd context switches per GB, voluntary / involuntary (TCP 1)", "per GB"),
];

/// The table: the headline profile's figures, and with a second profile
/// its figure beside each (`wire / veth`).
fn table(runs: &Runs, out: &mut String) {
    let head = runs.headline();
    let others: Vec<&Run> = runs.profiles.iter().filter(|r| r.profile != head.profile).collect();
    let suffix = if others.is_empty() {
        String::new()
    } else {
        format!(" ({})", std::iter::once(head).chain(others.iter().copied()).map(|r| r.profile.as_str()).collect::<Vec<_>>().join(" / "))
    };
    // With two profiles per cell the replies lost do not fit; the report has them.
    let header = |h: &str| if others.is_empty() { h.to_owned() } else { format!("{}{suffix}", h.replace(" (replies lost)", "")) };
    let _ = writeln!(out, "| mode | {} |", COLUMNS.iter().map(|c| header(c.1)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(COLUMNS.len()));
    let cell = |run: &Run, m: &str, test: &str, unit: &str| {
        let cell = fmt_median(run, m, test, unit, others.is_empty());
        if test == "tcp1_encapd_cs_vol_per_gb" && cell != "n/a" {
            format!("{cell} / {}", fmt_median(run, m, "tcp1_encapd_cs_invol_per_gb", unit, false))
        } else {
            cell
        }
    };
    for m in &head.modes {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|&(test, _, unit)| {
                let mut c = cell(head, m, test, unit);
                for o in &others {
                    let sep = if test == "tcp1_encapd_cs_vol_per_gb" { " · " } else { " / " };
                    c = format!("{c}{sep}{}", cell(o, m, test, unit));
                }
                c
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", mode_label(m), cells.join(" | "));
    }
}

/// A kernel-path mode's ratios to kernel VXLAN, as one clause.
fn kernel_path_ratios(run: &Run, mode: &str) -> String {
    let r = |test: &str| ratio_cell(run, mode, KERNEL_VXLAN, test);
    format!(
        "**{}** on one TCP stream, {} on four, {} of the 64-byte packet rate; RTT p50 at 10 % / 50 % load {} / {}, p99 at 50 % \
         {}; idle ping-pong p50 {}; whole-machine CPU per Gbit/s {} (TCP 1) / {} (TCP 4)",
        r("tcp1"),
        r("tcp4"),
        r("udp64_pps"),
        r("lat10_p50"),
        r("lat50_p50"),
        r("lat50_p99"),
        r("udp_rr_p50"),
        r("tcp1_cpu_per_gbps"),
        r("tcp4_cpu_per_gbps"),
    )
}

/// The ratios the README states, computed from the medians.
fn findings(run: &Run, out: &mut String) {
    let r = |mode: &str, base: &str, test: &str| ratio_cell(run, mode, base, test);
    let _ = writeln!(
        out,
        "- `uring` with offloads moves **{}** what the flannel-style `classic` baseline moves on one TCP stream, and {} its \
         64-byte packet rate.",
        r(UDP_HEADLINE, CLASSIC, "tcp1"),
        r(UDP_HEADLINE, CLASSIC, "udp64_pps"),
    );
    let _ = writeln!(
        out,
        "- Against kernel VXLAN, `uring` reaches **{}** on one TCP stream, {} on four and {} of its 64-byte packet rate; its \
         RTT p50 at 50 % load is {} VXLAN's, at {} VXLAN's whole-machine CPU per Gbit/s (TCP 1).",
        r(UDP_HEADLINE, KERNEL_VXLAN, "tcp1"),
        r(UDP_HEADLINE, KERNEL_VXLAN, "tcp4"),
        r(UDP_HEADLINE, KERNEL_VXLAN, "udp64_pps"),
        r(UDP_HEADLINE, KERNEL_VXLAN, "lat50_p50"),
        r(UDP_HEADLINE, KERNEL_VXLAN, "tcp1_cpu_per_gbps"),
    );
    if run.modes.iter().any(|m| m == KERNEL_PATH) {
        let _ = writeln!(
            out,
            "- With the kernel path (`kernel_path = \"tc\"`), against kernel VXLAN: {}. encapd's own CPU reads 0 there \
             because those packets never reach its threads: the eBPF programs run in the kernel's softirq, counted in the \
             whole-machine figure.",
            kernel_path_ratios(run, KERNEL_PATH),
        );
    }
    for (m, pair) in [(ENCAPD_VXLAN_KERNEL, "encapd ↔ encapd"), (ENCAPD_VXLAN_MIXED_KERNEL, "encapd ↔ a flannel.1-style kernel VTEP")] {
        if run.modes.iter().any(|x| x == m) {
            let _ = writeln!(
                out,
                "- The `vxlan` backend with the kernel path, {pair}, against kernel VXLAN ↔ kernel VXLAN: {}.",
                kernel_path_ratios(run, m),
            );
        }
    }
    if run.modes.iter().any(|m| m == ENCAPD_VXLAN) {
        let (e, u, k) = (ENCAPD_VXLAN, UDP_HEADLINE, KERNEL_VXLAN);
        let _ = writeln!(
            out,
            "- The `vxlan` backend against kernel VXLAN ↔ kernel VXLAN: encapd ↔ encapd reaches **{}** on one TCP stream \
             (the udp backend's `uring`: {}), {} on four ({}), {} of the 64-byte packet rate ({}), and an RTT p50 at 50 % \
             load of {} ({}).",
            r(e, k, "tcp1"),
            r(u, k, "tcp1"),
            r(e, k, "tcp4"),
            r(u, k, "tcp4"),
            r(e, k, "udp64_pps"),
            r(u, k, "udp64_pps"),
            r(e, k, "lat50_p50"),
            r(u, k, "lat50_p50"),
        );
    }
    if run.modes.iter().any(|m| m == ENCAPD_VXLAN_MIXED) {
        let m = ENCAPD_VXLAN_MIXED;
        let of_slower = |test: &str| match slower_of(run, KERNEL_VXLAN, ENCAPD_VXLAN, test) {
            Some((slow, _)) => format!("{} (of {slow})", r(m, slow, test)),
            None => "n/a".into(),
        };
        let _ = writeln!(
            out,
            "- encapd `vxlan` ↔ a flannel.1-style kernel VTEP, against the slower of the two pairs: {} on one TCP stream, {} \
             on four, {} of the 64-byte packet rate, RTT p50 at 50 % load {}.",
            of_slower("tcp1"),
            of_slower("tcp4"),
            of_slower("udp64_pps"),
            of_slower("lat50_p50"),
        );
    }
    encrypted_finding(run, out);
    carried_finding(run, out);
    let t = targets(run);
    let met = t.iter().filter(|t| t.verdict == Some(true)).count();
    let _ = writeln!(out, "- Targets ([bench/README.md](bench/README.md#targets)): {met} of {} met.", t.len());
    for t in &t {
        let v = match t.verdict {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not decidable",
        };
        let _ = writeln!(out, "  - {}: {v} ({})", t.name, t.detail);
    }
}

/// The encrypted overlays (WireGuard) the run measured, each against
/// encapd's clear-text `uring`, and who carried it.
fn encrypted_finding(run: &Run, out: &mut String) {
    let parts: Vec<String> = run
        .modes
        .iter()
        .filter(|m| family_of(m) == Some(Family::EncryptedOverlay))
        .map(|m| {
            let by = Mode::named(m).map_or("?", |x| x.carried_by());
            format!(
                "`{m}` (carried by {by}) {} Gbit/s on one TCP stream ({} `uring`'s), {} on four ({})",
                fmt_median(run, m, "tcp1", "Gbit/s", false),
                ratio_cell(run, m, UDP_HEADLINE, "tcp1"),
                fmt_median(run, m, "tcp4", "Gbit/s", false),
                ratio_cell(run, m, UDP_HEADLINE, "tcp4"),
            )
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(out, "- Encrypted overlays (WireGuard), against encapd's clear-text `uring`: {}.", parts.join("; "));
    }
}

/// Who carried one TCP stream's packets, per encapd mode, when the run
/// recorded it (runs since the underlay profiles).
fn carried_finding(run: &Run, out: &mut String) {
    let get = |m: &str, k: &str| run.median(m, &format!("tcp1_{k}"));
    let pct = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.0}"));
    let per = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.1}"));
    let parts: Vec<String> = run
        .modes
        .iter()
        .filter(|m| get(m, "fwd_encap_kernel_pct").is_some() || get(m, "fwd_decap_kernel_pct").is_some())
        .map(|m| {
            format!(
                "`{m}` {} / {} % by the kernel path ({} / {} % for the ACKs), {} datagrams per GSO send and {} per GRO receive",
                pct(get(m, "fwd_encap_kernel_pct")),
                pct(get(m, "fwd_decap_kernel_pct")),
                pct(get(m, "rev_encap_kernel_pct")),
                pct(get(m, "rev_decap_kernel_pct")),
                per(get(m, "fwd_gso_per_send")),
                per(get(m, "fwd_gro_per_receive")),
            )
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(
            out,
            "- Who carried one TCP stream's packets (encapsulating / decapsulating node; the workers carried the rest): {}.",
            parts.join("; ")
        );
    }
}

/// The block for the run in `repo/run_dir` (`run_dir` relative to `repo`,
/// as the README links it), markers included, ending with a newline.
pub fn block(repo: &Path, run_dir: &Path) -> Result<String, ReportError> {
    let runs = read_runs(&repo.join(run_dir))?;
    let run = runs.headline();
    let dir = run_dir.to_string_lossy();
    let e = |k: &str| run.env(k).unwrap_or("n/a").to_string();
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "<!-- Generated from {dir} by `encapd-bench readme --update README.md`; do not edit by hand \
         (tests/readme_perf.rs in bench/tool fails when this block and the newest committed full run disagree). -->"
    );
    let reps = run.reps.len();
    let profiles = if runs.profiles.len() > 1 {
        format!(
            " on {} underlay profiles (figures from `{}`, MTU-sized frames and GRO on receive as on a NIC; after each `/`, the \
             same on `veth`, which hands 64 KB super-packets across whole; [bench/README.md](bench/README.md#underlay-profiles))",
            runs.profiles.len(),
            run.profile
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "Run [{dir}]({dir}/report.md), started {} on `{}`: {} modes side by side{profiles}, {reps} repetition{}, medians; \
         load average before / after {} / {}.",
        e("started"),
        e("host"),
        run.modes.len(),
        if reps == 1 { "" } else { "s" },
        e("loadavg_start"),
        e("loadavg_end"),
    );
    let _ = writeln!(out, "Provenance: {}.\n", provenance(run).join("; "));
    table(&runs, &mut out);
    out.push_str(
        "\nWhole machine: both gateways, iperf3 at both ends and the kernel share the two cores, so this is what the \
         whole data path costs. encapd's own: user + system time of the encapd processes (both nodes', nodeA's alone in the mixed pair; `/proc/PID/stat`), and \
         their threads' context switches per GB received. n/a: not applicable (no encapd) or not recorded by this run. \
         † (if shown): over more than 1 % lost replies, not comparable. How each figure is measured: \
         [bench/README.md](bench/README.md).\n\n",
    );
    findings(run, &mut out);
    let suffix = if runs.profiled { format!("-{}", run.profile) } else { String::new() };
    let charts = [
        (format!("throughput{suffix}.svg"), "throughput per mode"),
        (format!("latency-50{suffix}.svg"), "RTT percentiles at 50 % load"),
        (format!("cpu{suffix}.svg"), "CPU per Gbit/s"),
    ];
    let present: Vec<_> = charts.iter().filter(|(f, _)| repo.join(run_dir).join(f).is_file()).collect();
    if !present.is_empty() {
        out.push('\n');
    }
    for (file, alt) in present {
        let _ = writeln!(out, "![{alt}]({dir}/{file})");
    }
    let _ = writeln!(out, "{END}");
    Ok(out)
}

/// The block in `readme` (markers included, with the newline after END).
pub fn extract(readme: &str) -> Option<&str> {
    let start = readme.find(BEGIN)?;
    let end = start + readme[start..].find(END)? + END.len();
    let end = if readme[end..].starts_with('\n') { end + 1 } else { end };
    Some(&readme[start..end])
}

/// `readme` with its block replaced by `block`.
pub fn replace(readme: &str, block: &str) -> Option<String> {
    let old = extract(readme)?;
    let start = readme.find(old)?;
    Some(format!("{}{block}{}", &readme[..start], &readme[start + old.len()..]))
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn full_runs_are_recognised() {
        let all = "routing vxlan-kernel classic mmsg-nooffload mmsg uring-nooffload uring encapd-vxlan encapd-vxlan-mixed";
        let full = [("modes", all), ("reps", "3"), ("t_tcp", "5"), ("t_udp", "2"), ("t_lat", "3")];
        assert!(is_full_run(&env(&full)));
        let mut before_vxlan_backend = full;
        before_vxlan_backend[0] = ("modes", "routing vxlan classic mmsg-nooffload mmsg uring-nooffload uring");
        assert!(is_full_run(&env(&before_vxlan_backend)), "a full run from before the vxlan backend's modes");
        let mut no_kernel = full;
        no_kernel[0] = ("modes", "routing classic mmsg-nooffload mmsg uring-nooffload uring encapd-vxlan encapd-vxlan-mixed");
        assert!(!is_full_run(&env(&no_kernel)), "no kernel VXLAN");
        let mut quick = full;
        quick[2] = ("t_tcp", "2");
        assert!(!is_full_run(&env(&quick)), "--quick durations");
        let mut few = full;
        few[0] = ("modes", "routing uring");
        assert!(!is_full_run(&env(&few)), "--modes subset");
        let mut once = full;
        once[1] = ("reps", "1");
        assert!(!is_full_run(&env(&once)), "one repetition");
        assert!(!is_full_run(&env(&[])));
    }

    #[test]
    fn settings_under_evaluation_are_named_for_what_they_change() {
        assert_eq!(mode_label("uring-nopin"), "encapd `uring`, workers not pinned (`cpus = []`)");
        assert!(mode_label("uring-trust").contains("trust-outer"));
        assert!(mode_label("uring-crossed").contains("two CPUs"));
        assert!(mode_label("uring-slice").contains("short-slice"));
        assert!(mode_label("uring-kernel").contains("kernel_path"));
        assert!(mode_label("encapd-vxlan-mixed-kernel").contains("kernel path"));
        assert!(mode_label("uring-batch8").contains("`batch = 8`"), "a pattern mode says its number");
        assert!(mode_label("uring-old").ends_with(", measured by the old harness"));
        // A mode the registry does not know keeps its bench name.
        assert_eq!(mode_label("uring-retired"), "`uring-retired`");
    }

    #[test]
    fn dated_names() {
        assert!(is_dated("2026-11-28-0712-vm"));
        assert!(is_dated("2026-11-28-0712-vm-2"));
        assert!(!is_dated("sample-quick"));
        assert!(!is_dated("2026-11-28-712-vm"));
        assert!(!is_dated("2026-11-28-0712-"));
    }

    #[test]
    fn block_is_found_and_replaced() {
        let readme = format!("# x\n\ntext\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(extract(&readme), Some(format!("{BEGIN}\nold\n{END}\n").as_str()));
        let new = format!("{BEGIN}\nnew\n{END}\n");
        assert_eq!(replace(&readme, &new).unwrap(), format!("# x\n\ntext\n{BEGIN}\nnew\n{END}\nafter\n"));
        assert_eq!(extract("no markers"), None);
    }
}
