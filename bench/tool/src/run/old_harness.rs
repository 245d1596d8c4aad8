//! The old harness beside the new one (`--old-harness REV`): to show that
//! `encapd-bench run` measures what the shell harness measured, the shell
//! `bench/run.sh` of revision REV (with the `scripts/lib.sh` it sources,
//! extracted into a temporary directory)
//! takes every mode too, one invocation per mode and repetition
//! (`--modes M --reps 1`, the same durations, workers and MTU), driving
//! the same encapd binary and the same latency probe, interleaved with
//! the new harness's run of that mode. Its values are recorded as mode
//! `M-old` on the veth profile (the only one the old harness knows), its
//! raw files as `raw/veth/M-old-r<rep>-*`, its commands in
//! `commands.log`, and the report divides each mode by its `-old`
//! counterpart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Write as _;
use std::process::{Command, Stdio};

use encapd_testbed::cmd::TempDir;

use super::record::{Cell, CommandLog, Results, Row};
use super::suite::Durations;
use super::warn;
use crate::exec::{argv, run_to_files};

/// The suffix of a mode measured by the old harness.
pub const OLD_SUFFIX: &str = "-old";

/// The old harness, checked out: its two files (`bench/run.sh` and the
/// `scripts/lib.sh` it sources) in a temporary directory, not a whole
/// worktree (the repository holds thousands of committed run files that
/// would only be written and deleted again).
pub struct OldHarness {
    dir: TempDir,
    pub commit: String,
}

/// What one invocation needs besides the mode.
pub struct Invocation<'a> {
    pub t: Durations,
    pub quick: bool,
    pub short: bool,
    pub workers: usize,
    pub ctr_mtu: Option<u32>,
    pub sockperf: bool,
    pub encapd: &'a Path,
    pub probe: &'a Path,
    /// A scratch directory for its output.
    pub work: &'a Path,
}

impl OldHarness {
    /// Checks out `commit`'s harness (it must have `bench/run.sh`).
    pub fn checkout(repo: &Path, commit: &str) -> Result<OldHarness, String> {
        let dir = TempDir::new("old-harness");
        let archive = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["archive", "--format=tar", commit, "bench/run.sh", "scripts/lib.sh"])
            .output()
            .map_err(|e| format!("git archive: {e}"))?;
        if !archive.status.success() {
            return Err(format!("--old-harness: {commit} has no bench/run.sh: {}", String::from_utf8_lossy(&archive.stderr).trim()));
        }
        let mut tar =
            Command::new("tar").arg("-x").arg("-C").arg(dir.path()).stdin(Stdio::piped()).spawn().map_err(|e| format!("tar: {e}"))?;
        tar.stdin.take().expect("piped stdin").write_all(&archive.stdout).map_err(|e| format!("tar: {e}"))?;
        let st = tar.wait().map_err(|e| format!("tar: {e}"))?;
        if !st.success() || !dir.path().join("bench/run.sh").is_file() {
            return Err(format!("--old-harness: extracting bench/run.sh of {commit} failed"));
        }
        Ok(OldHarness { dir, commit: commit.to_owned() })
    }

    /// Runs mode `mode` once; its rows go to `results` under `M-old`,
    /// repetition `rep`. A failed invocation records NA for every test it
    /// should have measured (`na` gives them).
    #[allow(clippy::too_many_arguments)]
    pub fn run_mode(
        &self,
        inv: &Invocation<'_>,
        mode: &str,
        rep: u32,
        raw: &Path,
        results: &mut Results,
        log: &mut CommandLog,
        na: impl Fn() -> Vec<Row>,
    ) -> std::io::Result<bool> {
        let out = inv.work.join(format!("old-{mode}-r{rep}"));
        let _ = std::fs::remove_dir_all(&out);
        let script = self.dir.path().join("bench/run.sh");
        let mut args = argv(&["bash", &script.to_string_lossy(), "--modes", mode, "--reps", "1", "--no-build", "--workers"]);
        args.push(inv.workers.to_string());
        args.push("--out".into());
        args.push(out.to_string_lossy().into_owned());
        if inv.quick {
            args.push("--quick".into());
        }
        if inv.short {
            args.push("--short".into());
        }
        if let Some(m) = inv.ctr_mtu {
            args.push("--ctr-mtu".into());
            args.push(m.to_string());
        }
        if inv.sockperf {
            args.push("--sockperf".into());
        }
        let name = format!("{mode}{OLD_SUFFIX}");
        let cell = Cell { mode: name.clone(), underlay: "veth".into(), rep };
        log.line(format!(
            "ENCAPD={} ENCAPD_BENCH={} bench/run.sh@{} {}",
            inv.encapd.display(),
            inv.probe.display(),
            &self.commit[..12.min(self.commit.len())],
            args[2..].join(" ")
        ));
        let mut cmd_args = argv(&["env", &format!("ENCAPD={}", inv.encapd.display()), &format!("ENCAPD_BENCH={}", inv.probe.display())]);
        cmd_args.extend(args);
        let harness_log = raw.join(format!("{name}-r{rep}-harness.log"));
        let per_mode = u64::from(5 * (inv.t.tcp + 5) + 3 * (inv.t.udp + 5) + 3 * (inv.t.lat + 5) + inv.t.rr + 60);
        let finished = run_to_files(None, &cmd_args, &harness_log, &with_err(&harness_log), Duration::from_secs(per_mode * 2));
        append_err(&harness_log);
        let ok = match &finished {
            Ok(f) => matches!(f, crate::exec::Finished::Exited(s) if s.code() == Some(0) || s.code() == Some(3)),
            Err(_) => false,
        };
        let rows = if ok { read_results(&out.join("results.csv"), mode) } else { Vec::new() };
        if rows.is_empty() {
            warn(&format!(
                "{name} rep {rep}: the old harness failed ({}); see {}",
                finished.map_or_else(|e| e.to_string(), |f| f.to_string()),
                harness_log.display()
            ));
            results.add(&cell, na())?;
        } else {
            results.add(&cell, rows)?;
        }
        copy_raw(&out.join("raw"), mode, raw, &name, rep);
        if let Ok(text) = std::fs::read_to_string(out.join("commands.log")) {
            for l in text.lines() {
                log.line(format!("  [old harness] {l}"));
            }
        }
        let _ = std::fs::remove_dir_all(&out);
        Ok(!rows_were_na(results, &cell))
    }
}

fn with_err(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".err");
    PathBuf::from(s)
}

/// Appends the `.err` file to the log and removes it.
fn append_err(log: &Path) {
    let err = with_err(log);
    if let Ok(text) = std::fs::read_to_string(&err) {
        let mut all = std::fs::read_to_string(log).unwrap_or_default();
        all.push_str(&text);
        let _ = std::fs::write(log, all);
    }
    let _ = std::fs::remove_file(err);
}

fn rows_were_na(results: &Results, cell: &Cell) -> bool {
    results.rows_of(cell).all(|r| r.value.is_none())
}

/// The old harness's `results.csv` (`mode,rep,test,value,unit`), rows of
/// `mode`.
fn read_results(path: &Path, mode: &str) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != 5 || encapd_testbed::mode::canonical(f[0]) != encapd_testbed::mode::canonical(mode) {
                return None;
            }
            let value = f[3].parse::<f64>().ok().filter(|v| v.is_finite());
            Some(Row::new(f[2], value, unit(f[4])))
        })
        .collect()
}

/// The `&'static` unit for a unit string the harnesses write.
fn unit(u: &str) -> &'static str {
    const UNITS: &[&str] = &["Gbit/s", "count", "cores", "cores/(Gbit/s)", "per GB", "pps", "%", "us", "per op"];
    UNITS.iter().find(|x| **x == u).copied().unwrap_or("")
}

/// `raw/<mode>-r1-*` of the old run → `raw/<profile>/<name>-r<rep>-*`.
fn copy_raw(from: &Path, mode: &str, to: &Path, name: &str, rep: u32) {
    let Ok(entries) = std::fs::read_dir(from) else { return };
    let prefix = format!("{mode}-r1-");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = file.strip_prefix(&prefix) {
            let _ = std::fs::copy(e.path(), to.join(format!("{name}-r{rep}-{rest}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_results_are_read_for_their_mode() {
        let dir = std::env::temp_dir().join(format!("encapd-bench-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("results.csv");
        std::fs::write(&p, "mode,rep,test,value,unit\nuring,1,tcp1,4.5,Gbit/s\nuring,1,tcp1_retrans,NA,count\nrouting,1,tcp1,9,Gbit/s\n")
            .unwrap();
        let rows = read_results(&p, "uring");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rows, [Row::new("tcp1", Some(4.5), "Gbit/s"), Row::new("tcp1_retrans", None, "count")]);
    }
}
