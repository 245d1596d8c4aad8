//! `encapd-bench trace-rtt`: where one request/response waits. Sparse UDP
//! ping-pongs (sockperf, 64 bytes, one round trip in flight, 100 per
//! second, so that every thread falls asleep in between, as in an idle
//! request/response) from ctrA to ctrB and back through each mode, while
//! `perf record -a` takes kernel tracepoints of the whole machine: device
//! transmits and receives, wakeups and context switches, io_uring
//! submissions, task work and completions, and the system calls of the
//! client, the server and encapd's workers.
//!
//! [`analyse`] cuts each round trip out of the record (from the client's
//! send to its next one) and puts its events on one time line, labelled by
//! who did what (`wake nodeB-worker (by nodeA-worker)`, `xmit ul`, ...);
//! it prints every stage with the share of round trips that had it, the
//! median time since the client's send and since the previous stage, then
//! the round trip with the median RTT, event by event. Device events are
//! kept only at the lengths a 64-byte probe has on that kind of device,
//! so other namespaces' traffic on the machine is left out; scheduler and
//! system-call events only for the threads named. Tracing adds a few
//! microseconds per event: compare stages, not absolute RTTs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use encapd_testbed::wiring::{CTR_B, Node};

use super::{BenchArgs, Prepared, enter, median, prepare, sockperf_server, tids_of};
use crate::exec::{argv, run_capture, run_to_files};
use crate::run::{info, warn};

#[derive(Debug, Clone, clap::Args)]
pub struct TraceRttArgs {
    /// Comma-separated modes (uring, mmsg, classic, vxlan-kernel, ... from the registry).
    #[arg(long, default_value = "vxlan-kernel,classic,uring")]
    pub modes: String,
    /// Ping-pong length per mode, 1-30 s.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub seconds: u32,
    /// Keep perf data and the time lines here (default: a temporary directory, removed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

const EVENTS: &[&str] = &[
    "net:net_dev_xmit",
    "net:netif_rx",
    "net:netif_receive_skb",
    "sched:sched_wakeup",
    "sched:sched_switch",
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_complete",
    "io_uring:io_uring_task_add",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_exit_recvfrom",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_exit_recvmsg",
    "syscalls:sys_exit_recvmmsg",
    "syscalls:sys_exit_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_exit_io_uring_enter",
    "syscalls:sys_exit_epoll_wait",
    "syscalls:sys_exit_epoll_pwait",
];

const PORT: u16 = 11112;

pub fn main(a: TraceRttArgs) -> Result<(), String> {
    let pkgs = ["@run", "@profile", "sockperf", "ethtool"];
    let Prepared { modes, setup: s, out, tmp: _tmp, bed } = prepare(&a.modes, &a.bench, &pkgs, a.out.clone(), "trace-rtt")?;
    for mode in &modes {
        if crate::exec::interrupted() {
            break;
        }
        let active = enter(&bed, mode, &out.join(format!("{}-configs", mode.name)), &s.encapd, 2)?;
        let pids = active.encapd_pids();
        let mut roles: Vec<(String, Vec<u32>)> = Vec::new();
        if pids.len() == 2 {
            roles.push(("nodeA-worker".into(), tids_of(&pids[..1])));
            roles.push(("nodeB-worker".into(), tids_of(&pids[1..])));
        }
        let text = trace(&bed, &mode.name, a.seconds, &out, roles)?;
        print!("{text}");
        std::fs::write(out.join(format!("{}.timeline.txt", mode.name)), &text).map_err(|e| e.to_string())?;
        drop(active.leave());
    }
    info(&format!("perf data and time lines in {}", out.display()));
    Ok(())
}

/// One sparse ping-pong under `perf record`; the analysis as text.
fn trace(
    bed: &encapd_testbed::bed::Bed,
    mode: &str,
    secs: u32,
    out: &std::path::Path,
    mut roles: Vec<(String, Vec<u32>)>,
) -> Result<String, String> {
    let server = sockperf_server(bed, PORT, &out.join(format!("{mode}.server.log")))?;
    let server_pid = server.pid().unwrap_or(0) as u32;
    let data = out.join(format!("{mode}.perf.data"));
    let mut args = argv(&["perf", "record", "-q", "-a", "-o", &data.to_string_lossy()]);
    for e in EVENTS {
        args.push("-e".into());
        args.push((*e).into());
    }
    args.extend(argv(&[
        "--",
        "ip",
        "netns",
        "exec",
        bed.ctr_ns(Node::A),
        "sockperf",
        "ping-pong",
        "-i",
        CTR_B,
        "-p",
        &PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-m",
        "64",
        "--mps",
        "100",
    ]));
    let f = run_to_files(
        None,
        &args,
        &out.join(format!("{mode}.sockperf.txt")),
        &out.join(format!("{mode}.perf.err")),
        Duration::from_secs(u64::from(secs) + 60),
    )
    .map_err(|e| format!("perf: {e}"))?;
    if !f.success() {
        warn(&format!("{mode}: perf record {f} (see {mode}.perf.err)"));
    }
    server.stop(Duration::from_secs(1));
    // The client started under perf: its pid is in the record only (the
    // sockperf process that is not the server).
    let pids = run_capture(None, &argv(&["perf", "script", "-i", &data.to_string_lossy(), "-F", "comm,pid"]), Duration::from_secs(120))
        .unwrap_or_default();
    let client = pids
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse::<u32>().ok()?))
        })
        .find(|(comm, pid)| *comm == "sockperf" && *pid != server_pid)
        .map_or(0, |(_, p)| p);
    let script = run_capture(
        None,
        &argv(&["perf", "script", "--ns", "-i", &data.to_string_lossy(), "-F", "comm,pid,tid,cpu,time,event,trace"]),
        Duration::from_secs(300),
    )?;
    std::fs::write(out.join(format!("{mode}.script.txt")), &script).map_err(|e| e.to_string())?;
    roles.push(("client".into(), vec![client]));
    roles.push(("server".into(), vec![server_pid]));
    Ok(analyse(mode, &script, &roles))
}

/// A 64-byte UDP payload over IPv4 is a 92-byte IP packet; +14 on an
/// Ethernet device (veth, VXLAN), +42 in the udp backend's underlay frame
/// (Ethernet, IP, UDP), +64 in a VXLAN underlay frame (Ethernet, IP, UDP,
/// VXLAN, inner Ethernet).
const PROBE_LENS: [u32; 4] = [92, 106, 134, 156];

fn syscall_label(event: &str) -> Option<&'static str> {
    Some(match event {
        "sys_enter_sendto" => "sendto",
        "sys_enter_sendmsg" => "sendmsg",
        "sys_exit_recvfrom" => "recvfrom returns",
        "sys_exit_recvmsg" => "recvmsg returns",
        "sys_exit_recvmmsg" => "recvmmsg returns",
        "sys_exit_read" => "read returns",
        "sys_enter_write" => "write",
        "sys_enter_writev" => "writev",
        "sys_enter_io_uring_enter" => "io_uring_enter",
        "sys_exit_io_uring_enter" => "io_uring_enter returns",
        "sys_exit_epoll_wait" | "sys_exit_epoll_pwait" => "epoll_wait returns",
        _ => return None,
    })
}

/// One line of `perf script -F comm,pid,tid,cpu,time,event,trace`.
#[derive(Debug, PartialEq)]
struct Event<'a> {
    pid: u32,
    tid: u32,
    time: f64,
    event: &'a str,
    trace: &'a str,
}

/// Parses `COMM PID/TID [CPU] TIME: EVENT: TRACE` (COMM may hold spaces).
fn parse_line(line: &str) -> Option<Event<'_>> {
    let tokens: Vec<(usize, &str)> = line
        .char_indices()
        .filter(|&(i, c)| !c.is_whitespace() && (i == 0 || line[..i].ends_with(char::is_whitespace)))
        .map(|(i, _)| {
            let end = line[i..].find(char::is_whitespace).map_or(line.len(), |e| i + e);
            (i, &line[i..end])
        })
        .collect();
    for w in 1..tokens.len().saturating_sub(3) {
        let Some((pid, tid)) = tokens[w].1.split_once('/') else { continue };
        let cpu = tokens[w + 1].1;
        if !(cpu.starts_with('[') && cpu.ends_with(']')) {
            continue;
        }
        let (Ok(pid), Ok(tid)) = (pid.parse(), tid.parse()) else { continue };
        let time: f64 = tokens[w + 2].1.strip_suffix(':')?.parse().ok()?;
        let (at, event) = tokens[w + 3];
        let event = event.strip_suffix(':')?;
        let trace = line[at + event.len() + 1..].trim_start();
        return Some(Event { pid, tid, time, event: event.rsplit(':').next().unwrap_or(event), trace });
    }
    None
}

/// The value of `name` in a tracepoint's text (`name=v`, `name: v` or
/// `name v`), up to a space or comma.
fn field<'a>(trace: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = trace[from..].find(name).map(|i| i + from) {
        let before_ok = i == 0 || !trace[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let rest = &trace[i + name.len()..];
        if before_ok && rest.starts_with(['=', ':', ' ']) {
            let v = rest[1..].trim_start();
            let end = v.find([' ', ',', '\t']).unwrap_or(v.len());
            if end > 0 {
                return Some(&v[..end]);
            }
        }
        from = i + name.len();
    }
    None
}

/// A complete round trip: (RTT, the client's send time, its events as
/// (time, label)).
type Trip = (f64, f64, Vec<(f64, String)>);

/// The stage table and the median round trip (see the module docs).
/// `roles`: a name and the pids or tids that play it (`client` and
/// `server` are processes, the rest threads).
pub fn analyse(mode: &str, script: &str, roles: &[(String, Vec<u32>)]) -> String {
    let mut by_pid: BTreeMap<u32, &str> = BTreeMap::new();
    let mut by_tid: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, ids) in roles {
        for &id in ids {
            if name == "client" || name == "server" {
                by_pid.insert(id, name);
            } else {
                by_tid.insert(id, name);
            }
        }
    }
    let client = roles.iter().find(|(n, _)| n == "client").and_then(|(_, ids)| ids.first().copied());
    let role = |pid: u32, tid: u32| by_tid.get(&tid).or_else(|| by_pid.get(&pid)).copied();
    let role_of =
        |task: Option<&str>| task.and_then(|t| t.parse::<u32>().ok()).and_then(|t| by_tid.get(&t).or_else(|| by_pid.get(&t)).copied());

    let mut trips: Vec<(f64, Vec<(f64, String)>)> = Vec::new();
    for line in script.lines() {
        let Some(e) = parse_line(line) else { continue };
        let who = role(e.pid, e.tid);
        let label = if matches!(e.event, "sys_enter_sendto" | "sys_enter_sendmsg") && Some(e.pid) == client {
            trips.push((e.time, Vec::new()));
            Some(format!("client: {}", syscall_label(e.event).unwrap_or(e.event)))
        } else if trips.is_empty() {
            None
        } else if matches!(e.event, "net_dev_xmit" | "netif_rx" | "netif_receive_skb") {
            let (Some(dev), Some(len)) = (field(e.trace, "dev"), field(e.trace, "len").and_then(|l| l.parse::<u32>().ok())) else {
                continue;
            };
            if !PROBE_LENS.contains(&len) {
                continue;
            }
            let verb = match e.event {
                "net_dev_xmit" => "xmit",
                "netif_rx" => "netif_rx",
                _ => "receive_skb",
            };
            Some(format!("{verb} {dev}{}", who.map(|w| format!(" (in {w})")).unwrap_or_default()))
        } else if e.event == "sched_wakeup" {
            role_of(field(e.trace, "pid")).map(|w| format!("wake {w}{}", who.map(|b| format!(" (by {b})")).unwrap_or_default()))
        } else if e.event == "sched_switch" {
            role_of(field(e.trace, "next_pid")).map(|n| format!("{n} runs"))
        } else if e.event.starts_with("io_uring_") {
            who.map(|w| {
                let op = field(e.trace, "opcode").or_else(|| field(e.trace, "op")).unwrap_or("");
                let kind = match e.event {
                    "io_uring_submit_req" => "submit",
                    "io_uring_complete" => "completion",
                    "io_uring_task_add" => "task work queued",
                    other => other,
                };
                format!("{w}: io_uring {kind} {op}").trim_end().to_owned()
            })
        } else if let Some(s) = syscall_label(e.event) {
            who.map(|w| format!("{w}: {s}"))
        } else {
            None
        };
        if let (Some(label), Some(trip)) = (label, trips.last_mut()) {
            trip.1.push((e.time, label));
        }
    }

    // Drop the last (possibly cut) trip and trips without the reply.
    trips.pop();
    let complete: Vec<Trip> = trips
        .into_iter()
        .filter_map(|(t0, ev)| {
            let back = ev.iter().filter(|(_, l)| l.starts_with("client: recv")).map(|(t, _)| *t).next_back()?;
            Some((back - t0, t0, ev))
        })
        .collect();
    let mut s = String::new();
    if complete.is_empty() {
        let _ = writeln!(s, "{mode}: no complete round trip found (client pid {})", client.unwrap_or(0));
        return s;
    }
    let mut rtts: Vec<f64> = complete.iter().map(|c| c.0).collect();
    rtts.sort_by(f64::total_cmp);
    let n = complete.len();
    let _ = writeln!(
        s,
        "== {mode}: {n} round trips traced; RTT (under tracing) p50 {:.1} us, p90 {:.1} us",
        median(&rtts) * 1e6,
        rtts[(n as f64 * 0.9) as usize] * 1e6
    );
    let mut since_send: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut since_prev: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (_, t0, events) in &complete {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut prev = *t0;
        for (t, label) in events {
            let k = seen.entry(label).or_default();
            *k += 1;
            let key = if *k == 1 { label.clone() } else { format!("{label} #{k}") };
            since_send.entry(key.clone()).or_default().push(t - t0);
            since_prev.entry(key).or_default().push(t - prev);
            prev = *t;
        }
    }
    let mut rows: Vec<(f64, &String)> =
        since_send.iter().filter(|(_, v)| v.len() as f64 >= n as f64 * 0.2).map(|(k, v)| (median(v), k)).collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let _ = writeln!(s, "{:64} {:>6} {:>11} {:>11}", "stage", "trips", "since send", "since prev");
    for (med, key) in rows {
        let short: String = key.chars().take(64).collect();
        let _ = writeln!(
            s,
            "{short:64} {:5.0}% {:9.1}us {:9.1}us",
            100.0 * since_send[key].len() as f64 / n as f64,
            med * 1e6,
            median(&since_prev[key]) * 1e6
        );
    }
    let mut by_rtt: Vec<&Trip> = complete.iter().collect();
    by_rtt.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rtt, t0, events) = by_rtt[n / 2];
    let _ = writeln!(s, "-- the median round trip ({:.1} us), event by event (us since send, +us since previous):", rtt * 1e6);
    let mut prev = *t0;
    for (t, label) in events {
        let _ = writeln!(s, "{:9.1} {:+8.1}  {label}", (t - t0) * 1e6, (t - prev) * 1e6);
        prev = *t;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_script_lines_and_fields() {
        let e = parse_line("  sockperf 4242/4242 [001] 1234.000100: syscalls:sys_enter_sendto: fd: 0x3, len: 64").unwrap();
        assert_eq!((e.pid, e.tid, e.event), (4242, 4242, "sys_enter_sendto"));
        assert!((e.time - 1234.0001).abs() < 1e-9);
        let e = parse_line("encapd w 0 77/78 [000] 1.5: net:net_dev_xmit: dev=ul skbaddr=0x1 len=134 rc=0").unwrap();
        assert_eq!((e.pid, e.tid), (77, 78));
        assert_eq!(field(e.trace, "dev"), Some("ul"));
        assert_eq!(field(e.trace, "len"), Some("134"));
        assert_eq!(field("comm=x pid=5 prio=120", "pid"), Some("5"));
        assert_eq!(field("next_comm=x next_pid=9", "pid"), None, "only the whole name");
        assert!(parse_line("not a perf line").is_none());
    }

    #[test]
    fn round_trips_are_cut_and_staged() {
        let mut script = String::new();
        for (i, t0) in [10.0_f64, 10.01, 10.02, 10.03].iter().enumerate() {
            let t = |us: f64| t0 + us * 1e-6;
            script += &format!("sockperf 100/100 [0] {:.6}: syscalls:sys_enter_sendto: fd: 3\n", t(0.0));
            script += &format!("swapper 0/0 [1] {:.6}: net:net_dev_xmit: dev=ul skbaddr=0x1 len=134 rc=0\n", t(20.0));
            script += &format!("swapper 0/0 [1] {:.6}: net:net_dev_xmit: dev=ul skbaddr=0x1 len=1500 rc=0\n", t(21.0));
            script += &format!("x 1/1 [1] {:.6}: sched:sched_wakeup: comm=encapd-w0 pid=301 prio=120\n", t(30.0));
            script += &format!("sockperf 100/100 [0] {:.6}: syscalls:sys_exit_recvfrom: 0x40\n", t(100.0 + i as f64));
        }
        let roles = vec![("client".to_owned(), vec![100]), ("server".to_owned(), vec![200]), ("nodeB-worker".to_owned(), vec![301])];
        let out = analyse("uring", &script, &roles);
        assert!(out.starts_with("== uring: 3 round trips traced"), "the last trip may be cut: {out}");
        assert!(out.contains("xmit ul "), "{out}");
        assert!(out.contains("wake nodeB-worker"), "{out}");
        assert!(!out.contains("len=1500"), "{out}");
        assert!(out.contains("-- the median round trip (101.0 us)"), "{out}");
    }
}
