//! A run's description: `env.txt` (`key=value` lines, read by the report
//! and by `encapd-bench readme` to decide whether a run is a full one)
//! and the run directory's `README.md` (the same for people, with the
//! commands).

use std::fmt::Write as _;
use std::path::Path;

use super::suite::{Durations, LOADS, PACED_RATE};

/// Facts about the machine and the tools, read once.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub nproc: usize,
    pub host: String,
    pub iperf3: String,
    pub sockperf: String,
}

impl Machine {
    pub fn read(with_sockperf: bool) -> Machine {
        let first_line = |prog: &str, arg: &str| {
            std::process::Command::new(prog)
                .arg(arg)
                .output()
                .ok()
                .map(|o| {
                    let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                    t.push_str(&String::from_utf8_lossy(&o.stderr));
                    t.lines().next().unwrap_or("").trim().to_owned()
                })
                .unwrap_or_default()
        };
        let sockperf = if with_sockperf {
            let v = first_line("sockperf", "--version");
            v.split("version ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_owned()
        } else {
            String::new()
        };
        Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
                .unwrap_or_default(),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .split('.')
                .next()
                .unwrap_or("")
                .to_owned(),
            iperf3: first_line("iperf3", "--version"),
            sockperf,
        }
    }
}

/// Everything `env.txt` and `README.md` say.
pub struct Description<'a> {
    pub started: String,
    pub elapsed_s: u64,
    pub invocation: String,
    pub modes: Vec<String>,
    pub underlays: Vec<String>,
    pub reps: u32,
    pub t: Durations,
    pub tcp_cc_default: String,
    pub workers: usize,
    pub ctr_mtu: Option<u32>,
    pub machine: &'a Machine,
    pub provenance: &'a [(String, String)],
    pub encapd_version: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub quiet: String,
    pub baseline: Option<(String, String)>,
    pub old_harness: Option<(String, Vec<String>)>,
    pub sockperf: bool,
    pub failed: &'a [String],
    /// Binaries as (env key, path).
    pub bins: Vec<(String, String)>,
}

const MTUS: &str = "per mode (routing 1500, kernel VXLAN and encapd vxlan backend 1450, encapd udp backend 1472, WireGuard (encapd, wireguard-go, boringtun) 1420)";

impl Description<'_> {
    fn ctr_mtu(&self) -> String {
        self.ctr_mtu.map_or_else(|| MTUS.to_owned(), |m| m.to_string())
    }

    fn prov(&self, key: &str) -> &str {
        self.provenance.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }

    /// `env.txt`.
    pub fn env_txt(&self) -> String {
        let m = self.machine;
        let mut kv: Vec<(String, String)> = vec![
            ("started".into(), self.started.clone()),
            ("elapsed_s".into(), self.elapsed_s.to_string()),
            ("invocation".into(), self.invocation.clone()),
            ("harness".into(), "encapd-bench run".into()),
            ("modes".into(), self.modes.join(" ")),
            ("underlays".into(), self.underlays.join(" ")),
            ("mode_order".into(), "alternating".into()),
            ("reps".into(), self.reps.to_string()),
            ("t_tcp".into(), self.t.tcp.to_string()),
            ("t_udp".into(), self.t.udp.to_string()),
            ("t_lat".into(), self.t.lat.to_string()),
            ("lat_loads".into(), LOADS.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")),
            ("tcp_cc_default".into(), self.tcp_cc_default.clone()),
            ("workers".into(), self.workers.to_string()),
            ("ctr_mtu".into(), self.ctr_mtu()),
            ("kernel".into(), m.kernel.clone()),
            ("cpu".into(), m.cpu.clone()),
            ("nproc".into(), m.nproc.to_string()),
            ("host".into(), m.host.clone()),
        ];
        kv.extend(self.provenance.iter().cloned());
        kv.extend([
            ("iperf3".into(), m.iperf3.clone()),
            ("encapd".into(), self.encapd_version.clone()),
            ("loadavg_start".into(), self.loadavg_start.clone()),
            ("loadavg_end".into(), self.loadavg_end.clone()),
            ("quiet".into(), self.quiet.clone()),
        ]);
        if let Some((commit, _)) = &self.baseline {
            kv.push(("baseline_rev".into(), commit.clone()));
        }
        if let Some((commit, modes)) = &self.old_harness {
            kv.push(("old_harness_rev".into(), commit.clone()));
            kv.push(("old_harness_modes".into(), modes.join(" ")));
        }
        if self.sockperf {
            kv.push(("sockperf".into(), m.sockperf.clone()));
        }
        kv.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// The run directory's `README.md`.
    pub fn readme(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let t = &self.t;
        let _ = writeln!(s, "# encapd benchmark run {} on {}\n", self.started, m.host);
        s.push_str("Raw data of one `encapd-bench run`; `report.md` is rendered from it\n");
        s.push_str("(`encapd-bench report DIR`). See bench/README.md for what each test measures.\n\n");
        let _ = writeln!(s, "- command: `{}` (wall time {} s)", self.invocation, self.elapsed_s);
        let _ = writeln!(s, "- kernel: `{}`", m.kernel);
        let _ = writeln!(s, "- CPU: {} ({} CPUs)", m.cpu, m.nproc);
        let head = self.prov("git_head");
        let unc = self.prov("git_uncommitted");
        let _ = writeln!(
            s,
            "- git revision: `{}`; uncommitted at start: {}",
            if head.is_empty() { "not a git checkout" } else { head },
            if unc.is_empty() { "none" } else { unc }
        );
        for (key, path) in &self.bins {
            let _ = writeln!(
                s,
                "- `{path}`: sha256 `{}`, built from `{}`",
                self.prov(&format!("{key}_sha256")),
                self.prov(&format!("{key}_build"))
            );
        }
        if let Some((commit, bin)) = &self.baseline {
            let _ = writeln!(
                s,
                "- baseline (modes `*-base`): `{bin}`, sha256 `{}`, built from `{commit}` in a clean worktree",
                self.prov("encapd_base_sha256")
            );
        }
        if let Some((commit, modes)) = &self.old_harness {
            let _ =
                writeln!(s, "- old harness: `bench/run.sh` of `{commit}` for the modes `{}` (`M-old`), veth profile", modes.join("`, `"));
        }
        let _ = writeln!(s, "- iperf3: {}; TCP default congestion control: `{}`", m.iperf3, self.tcp_cc_default);
        if !self.encapd_version.is_empty() {
            let _ = writeln!(s, "- encapd: {}, `workers = {}`, configs in `configs/<mode>/`", self.encapd_version, self.workers);
        }
        let _ = writeln!(s, "- container MTU: {}", self.ctr_mtu());
        let _ = writeln!(s, "- underlay profiles: {} (bench/README.md says how each is made)", self.underlays.join(", "));
        let _ = writeln!(
            s,
            "- load average (1, 5, 15 min) at start: {}; at end: {}{}",
            self.loadavg_start,
            self.loadavg_end,
            if self.quiet.is_empty() { String::new() } else { format!("; {}", self.quiet) }
        );
        let _ = writeln!(
            s,
            "- modes: {}; {} repetition(s), modes and profiles interleaved within each (in reverse order in even repetitions)\n",
            self.modes.join(" "),
            self.reps
        );
        s.push_str("## Commands\n\n");
        s.push_str("Per mode, profile and repetition (`<ctrA>`, `<ctrB>`: the container namespaces; a fresh\n");
        s.push_str("one-shot server in ctrB for every test). The probe rate is LOAD % of the mode's\n");
        s.push_str("`udp64_pps` in the same repetition (`lat<LOAD>_offered_pps` in results.csv).\n\n```sh\n");
        let c = "ip netns exec <ctrA> iperf3 -c 100.96.2.3 -p 5201 --connect-timeout 3000 -J";
        let _ = writeln!(s, "ip netns exec <ctrB> iperf3 -s -1 -B 100.96.2.3 -p 5201");
        let _ = writeln!(s, "{c} -t {}                  # tcp1", t.tcp);
        let _ = writeln!(s, "{c} -t {} -C cubic        # tcp1_cubic", t.tcp);
        let _ = writeln!(s, "{c} -t {} -b {PACED_RATE}  # tcp1_paced", t.tcp);
        let _ = writeln!(s, "{c} -t {} -P 4            # tcp4", t.tcp);
        let _ = writeln!(s, "{c} -t {} -P 4 -C cubic  # tcp4_cubic", t.tcp);
        let _ = writeln!(s, "{c} -t {} -u -b 0 -l 64   # udp64 (also 512, 1400)", t.udp);
        let _ = writeln!(s, "ip netns exec <ctrB> encapd-bench latency server --bind 100.96.2.3:7000");
        let _ = writeln!(
            s,
            "ip netns exec <ctrA> encapd-bench latency client --target 100.96.2.3:7000 --rate RATE --duration {} --out raw/PROFILE/MODE-rREP-latLOAD --json",
            t.lat
        );
        if self.sockperf {
            let _ = writeln!(s, "ip netns exec <ctrA> sockperf ping-pong -i 100.96.2.3 -p 11111 -t {} -m 64 --full-rtt", t.rr);
        }
        s.push_str("```\n\n");
        s.push_str("CPU: `/proc/stat` (user + nice + system + irq + softirq jiffies of the whole\n");
        s.push_str("machine) read before and after each TCP client run; cores = busy jiffies /\n");
        s.push_str("CLK_TCK / wall seconds. encapd's own CPU over the same run: utime + stime\n");
        s.push_str("of the encapd processes (`/proc/PID/stat`), and their threads' voluntary and\n");
        s.push_str("involuntary context switches (`/proc/PID/task/*/status`) per GB received.\n");
        s.push_str("Who carried the packets: encapd's `/metrics` on every encapd node before and\n");
        s.push_str("after tcp1, tcp4 and udp64 (kernel path vs worker counters, datagrams per GSO\n");
        s.push_str("send and per GRO receive). Every command exactly as run: `commands.log`.\n\n");
        s.push_str("## Files\n\n");
        s.push_str("- `results.csv`: every value (`mode,underlay,rep,test,value,unit`; `NA`: failed)\n");
        s.push_str("- `env.txt`: the above as `key=value` lines (read by the report)\n");
        s.push_str("- `raw/<profile>/`: iperf3 JSON, probe `.hgrm` + `.json`, encapd logs with counters and\n");
        s.push_str("  `/metrics` at the end of each mode, kernel VTEP statistics\n");
        s.push_str("- `report.md` and `*.svg`: the rendered report\n");
        if !self.failed.is_empty() {
            let _ = writeln!(s, "\nSetup failed for: {} (recorded as NA).", self.failed.join(" "));
        }
        s
    }
}

/// Removes every file over 1 MB under `dir` (keeps a run folder small);
/// returns what it removed.
pub fn drop_large_files(dir: &Path) -> Vec<String> {
    let mut dropped = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return dropped };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            dropped.extend(drop_large_files(&p));
        } else if e.metadata().is_ok_and(|m| m.len() > 1_000_000) && std::fs::remove_file(&p).is_ok() {
            dropped.push(p.display().to_string());
        }
    }
    dropped
}
