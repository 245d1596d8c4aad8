//! Network namespaces the tests create, and running things inside them.
//!
//! Promises: a namespace is named `et<hex pid>_<n>-<role>` (unique per test
//! process and topology, so tests run in parallel), is created by
//! [`Namespaces::add`] and deleted when the [`Namespaces`] guard drops, on
//! every exit path. Namespaces left by a test process that no longer
//! exists (killed with SIGKILL, so no `Drop` ran) are removed, with any
//! process still inside, the first time a process of ours creates one.
//! Nothing here touches the root namespace: commands run with `ip -n` or
//! `ip netns exec`, which fail rather than fall back to it, and code runs
//! on a thread that has entered the namespace ([`in_netns`]).
//!
//! [`Permit`] bounds how many topologies run at once in one test process
//! (CPU-heavy tests would starve each other on a small machine).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;

use crate::cmd::{Output, must, run, run_cmd, run_cmd_with_input, unique_id};

/// The roles a namespace name may end in (see [`Namespaces::name`]): the
/// two-node topology's, and a fleet's (`ful` the underlay, `fn3` a node,
/// `fp3x1` a pod).
const ROLES: [&str; 5] = ["cA", "nA", "nB", "cB", "md"];

fn is_role(role: &str) -> bool {
    let fleet =
        |kind: &str| role.strip_prefix(kind).is_some_and(|r| !r.is_empty() && r.len() <= 8 && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    ROLES.contains(&role) || role == "ful" || fleet("fn") || fleet("fp")
}

static STALE_CLEANUP: Once = Once::new();

/// The namespaces of one topology; all deleted on drop.
pub struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Default for Namespaces {
    fn default() -> Namespaces {
        Namespaces::new()
    }
}

impl Namespaces {
    /// A new, empty set with a prefix no other set of any test process
    /// uses. Removes stale namespaces first (once per process).
    pub fn new() -> Namespaces {
        STALE_CLEANUP.call_once(remove_stale_namespaces);
        Namespaces { prefix: format!("et{:x}_{}", std::process::id(), unique_id()), created: Vec::new() }
    }

    /// `et<pid>_<n>`, shared by every name of this set (and handy as a tag
    /// for the topology's temporary directory).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name for `role` (one of `cA`, `nA`, `nB`, `cB`, `md`).
    pub fn name(&self, role: &str) -> String {
        assert!(is_role(role), "unknown namespace role {role:?}");
        format!("{}-{role}", self.prefix)
    }

    /// Creates the namespace for `role` and sets `sysctls` in it
    /// (`key=value`); returns its name.
    pub fn add(&mut self, role: &str, sysctls: &[&str]) -> String {
        let ns = self.name(role);
        must("ip", &["netns", "add", &ns]);
        self.created.push(ns.clone());
        if !sysctls.is_empty() {
            let mut args = vec!["sysctl", "-q", "-w"];
            args.extend_from_slice(sysctls);
            let o = ns_exec(&ns, &args, Duration::from_secs(10));
            assert!(o.ok(), "sysctl in {ns} failed: {}", o.text());
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            let o = Command::new("ip").args(["netns", "del", &ns]).output();
            if let Ok(o) = o
                && !o.status.success()
            {
                eprintln!("warning: ip netns del {ns}: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

/// Runs a command inside network namespace `ns` (`ip netns exec`).
pub fn ns_exec(ns: &str, args: &[&str], timeout: Duration) -> Output {
    run_cmd(Command::new("ip").args(["netns", "exec", ns]).args(args), timeout)
}

/// `ip -n ns args...`, panicking on failure.
pub fn ip(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    must("ip", &full)
}

/// Several `ip` commands in one process (`ip -n ns -batch -`), panicking
/// on failure.
pub fn ip_batch(ns: &str, lines: &[&str]) {
    let input = lines.join("\n") + "\n";
    let o = run_cmd_with_input(Command::new("ip").args(["-n", ns, "-batch", "-"]), input.as_bytes(), Duration::from_secs(20));
    assert!(o.ok(), "ip -n {ns} -batch failed ({}): {}\ncommands:\n{input}", o.status, o.stderr);
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns only reads the fd, which `f` keeps open for the call; it
    // changes the network namespace of the calling thread alone.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`, so the
/// sockets `f` creates belong to `ns` (they stay there when returned).
pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(ns: &str, f: F) -> T {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn_scoped(s, || {
                enter_netns(ns);
                f()
            })
            .expect("spawning a netns thread");
        match handle.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

/// Pids of the processes in namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", ns]).stdout.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Namespaces this process created (any test), for checks after cleanup.
pub fn our_namespaces() -> Vec<String> {
    list_netns().into_iter().filter(|ns| owner_pid(ns) == Some(std::process::id())).collect()
}

/// `et<hex pid>_<n>-<role>` → the pid of the test process that made it.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("et")?;
    let (pid, rest) = rest.split_once('_')?;
    let (n, role) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || !is_role(role) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

fn list_netns() -> Vec<String> {
    let o = run("ip", &["netns", "list"]);
    o.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// Removes namespaces (and the processes in them) left by test processes of
/// ours that died without cleaning up. Only names of our own pattern whose
/// creating process no longer exists are touched.
fn remove_stale_namespaces() {
    for ns in list_netns() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for p in netns_pids(&ns) {
            // SAFETY: kill has no memory-safety preconditions. `p` is not
            // our child: it lives in a namespace that a dead test run of
            // ours created, so that run started it and nobody will stop it.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = run("ip", &["netns", "del", &ns]);
        eprintln!("removed stale test namespace {ns} (creator pid {pid} is gone)");
    }
}

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

fn max_topologies() -> usize {
    std::env::var("ENCAPD_TEST_TOPOLOGIES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2)
}

/// One of the `ENCAPD_TEST_TOPOLOGIES` (default 2) slots for a running
/// topology; [`Permit::acquire`] waits for a free one, drop frees it.
pub struct Permit(());

impl Permit {
    pub fn acquire() -> Permit {
        let max = max_topologies();
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_to_their_creator() {
        assert_eq!(owner_pid("et1a2b_3-nA"), Some(0x1a2b));
        assert_eq!(owner_pid("et1a2b_3-md"), Some(0x1a2b));
        assert_eq!(owner_pid("edf301-nodeA"), None);
        assert_eq!(owner_pid("et1a2b_3-foo"), None);
        assert_eq!(owner_pid("et1a2b_3-fn12"), Some(0x1a2b));
        assert_eq!(owner_pid("et1a2b_3-fp12x1"), Some(0x1a2b));
        assert_eq!(owner_pid("et1a2b_3-ful"), Some(0x1a2b));
        assert_eq!(owner_pid("et1a2b_3-f"), None);
        assert_eq!(owner_pid("et1a2b_-nA"), None);
    }
}
