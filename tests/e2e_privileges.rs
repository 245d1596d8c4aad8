//! Privileges of a running gateway, end to end in namespaces: once encapd
//! says it is ready (`READY=1` on its notification socket, the moment a
//! service manager would start relying on it), no thread of the process
//! holds a capability, effective or permitted, whether it stays uid 0 or
//! switches to `[process] user`. The threads are read at that moment, not
//! after a pause: a worker that sheds its capabilities only on its next
//! loop iteration is caught. Root only.

use encapd_testbed as common;

use std::time::Duration;

use common::notify::NotifySocket;
use common::process::{ThreadCaps, thread_caps};
use common::{CTR_B, Node, Options, Topology, require_root};

/// Restarts nodeA's encapd with a notification socket and returns every
/// thread's capabilities as read the moment it says READY=1, and its uid then.
fn caps_at_ready(t: &mut Topology) -> (Vec<ThreadCaps>, u32) {
    t.stop_node(Node::A);
    let notify = NotifySocket::bind(t.dir());
    t.spawn_node(Node::A, &[("NOTIFY_SOCKET", notify.path())]);
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    // Read first, check later: nothing may run between READY and the read.
    let caps = ready.as_ref().map(|_| thread_caps(t.pid(Node::A)));
    let uid = ready.as_ref().map(|_| uid_of(t.pid(Node::A)));
    assert!(ready.is_some(), "no READY=1 from encapd within 10 s:\n{}", t.log(Node::A));
    t.wait_node_ready(Node::A);
    (caps.unwrap(), uid.unwrap())
}

/// The real uid of `pid`.
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the process status");
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("a Uid line");
    line.split_whitespace().next().and_then(|u| u.parse().ok()).expect("a numeric uid")
}

fn check(sections: &str, want_uid: u32) {
    let mut opts = Options::new("uring");
    opts.sections_a = sections.to_owned();
    let mut t = Topology::with(opts);
    let (caps, uid) = caps_at_ready(&mut t);
    let all = caps.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ");
    eprintln!("uid {uid}; threads at READY=1:\n  {all}");
    assert_eq!(uid, want_uid, "encapd's uid once ready");
    let workers = caps.iter().filter(|c| c.name.starts_with("encapd-w")).count();
    assert_eq!(workers, 2, "both workers among the threads read:\n  {all}");
    let holding: Vec<String> = caps.iter().filter(|c| c.effective != 0 || c.permitted != 0).map(ToString::to_string).collect();
    assert!(holding.is_empty(), "threads holding capabilities at READY=1:\n  {}\nall threads:\n  {all}", holding.join("\n  "));
    // And the unprivileged gateway forwards.
    let o = t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]);
    assert!(o.ok(), "ping through the restarted encapd: {}", o.text());
}

#[test]
fn no_thread_holds_a_capability_once_ready_as_root() {
    if !require_root() {
        return;
    }
    check("", 0);
}

#[test]
fn no_thread_holds_a_capability_once_ready_as_nobody() {
    if !require_root() {
        return;
    }
    let nobody = common::run("id", &["-u", "nobody"]);
    assert!(nobody.ok(), "no user nobody: {}", nobody.text());
    let uid: u32 = nobody.stdout.trim().parse().expect("a numeric uid");
    check("[process]\nuser = \"nobody\"\ngroup = \"nogroup\"\n", uid);
}
