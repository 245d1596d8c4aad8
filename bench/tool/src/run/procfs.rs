//! CPU accounting from `/proc`, read around every TCP client run:
//!
//! - the whole machine: busy jiffies of the `cpu` line of `/proc/stat`
//!   (user + nice + system + irq + softirq; idle, iowait and steal are
//!   not busy);
//! - encapd's own: user + system time of every thread of the encapd
//!   processes (`/proc/PID/stat` fields 14 and 15, counted after the `)`
//!   that ends the command name, which may hold spaces), and their
//!   threads' voluntary and involuntary context switches, summed over
//!   `/proc/PID/task/*/status` (the process's own status counts its main
//!   thread only).

use std::time::Instant;

use super::parse::EncapdCost;

/// Busy jiffies of the whole machine.
pub fn cpu_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_of(&stat)
}

fn busy_of(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    (f.len() >= 7).then(|| f[0] + f[1] + f[2] + f[5] + f[6])
}

/// Jiffies per second (`getconf CLK_TCK`; 100 where getconf is missing,
/// the value of every Linux on which the project runs).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The 1-, 5- and 15-minute load averages as `/proc/loadavg` shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    loadavg().split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// One reading of processes' CPU time and context switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    pub ticks: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// The encapd processes `pids` together; `None` when one is gone.
pub fn sample(pids: &[i32]) -> Option<ProcSample> {
    let mut s = ProcSample::default();
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        s.ticks += stat_ticks(&stat)?;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for t in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else { continue };
            let (v, n) = switches(&status);
            s.voluntary += v;
            s.involuntary += n;
        }
    }
    Some(s)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, f[11].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn switches(status: &str) -> (u64, u64) {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (field("voluntary_ctxt_switches:"), field("nonvoluntary_ctxt_switches:"))
}

/// The whole machine's and encapd's CPU over one client run.
pub struct CpuWindow {
    start: Instant,
    busy: Option<u64>,
    encapd: Option<ProcSample>,
    pids: Vec<i32>,
}

impl CpuWindow {
    /// Starts measuring (encapd's processes `pids`, none for a mode
    /// without encapd).
    pub fn start(pids: &[i32]) -> CpuWindow {
        let encapd = if pids.is_empty() { None } else { sample(pids) };
        CpuWindow { busy: cpu_busy(), encapd, pids: pids.to_vec(), start: Instant::now() }
    }

    /// (whole-machine cores, encapd's cost); encapd's is `None` when a
    /// process went away, and not asked for without encapd.
    pub fn finish(self, hz: f64) -> (Option<f64>, Option<EncapdCost>) {
        let secs = self.start.elapsed().as_secs_f64();
        let busy_after = cpu_busy();
        let encapd_after = if self.pids.is_empty() { None } else { sample(&self.pids) };
        let machine = match (self.busy, busy_after) {
            (Some(a), Some(b)) if secs > 0.0 => Some((b.saturating_sub(a)) as f64 / hz / secs),
            _ => None,
        };
        let encapd = match (self.encapd, encapd_after) {
            (Some(a), Some(b)) if secs > 0.0 => Some(EncapdCost {
                cores: b.ticks.saturating_sub(a.ticks) as f64 / hz / secs,
                cs_voluntary: b.voluntary.saturating_sub(a.voluntary),
                cs_involuntary: b.involuntary.saturating_sub(a.involuntary),
            }),
            _ => None,
        };
        (machine, encapd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_jiffies_leave_out_idle_iowait_and_steal() {
        assert_eq!(busy_of("cpu  10 1 5 1000 7 2 3 9 0 0\ncpu0 1 1 1 1 1 1 1\n"), Some(21));
        assert_eq!(busy_of("intr 1\n"), None);
    }

    #[test]
    fn stat_fields_after_a_command_name_with_spaces() {
        let stat = "123 (encapd w (0)) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 5 0 99";
        assert_eq!(stat_ticks(stat), Some(333));
    }

    #[test]
    fn context_switches_from_status() {
        assert_eq!(switches("Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n"), (12, 3));
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let me = std::process::id() as i32;
        assert!(sample(&[me]).is_some(), "our own /proc entry");
        assert!(sample(&[i32::MAX]).is_none(), "no such process");
    }
}
