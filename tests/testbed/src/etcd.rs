//! A real etcd (Debian's `etcd` 3.4) for the tests: one to three members,
//! each started by pid inside a namespace the test created, listening on
//! that namespace's address `host` only (client port 2379, 22379, 32379),
//! data in a temporary directory. Members are stopped by pid (SIGTERM, then
//! SIGKILL) by [`EtcdCluster::stop_member`] or when the cluster drops, on
//! every exit path; their logs are printed when the test fails. A member
//! left behind by a test process killed with SIGKILL sits in one of that
//! process's namespaces, which the next run removes with everything in it
//! (see [`super::netns`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cmd::{Output, TempDir, wait_for};
use crate::instance::print_log_if_panicking;
use crate::netns::ns_exec;
use crate::process::stop_child;

/// Client and peer ports of up to three members.
const PORTS: [(u16, u16); 3] = [(2379, 2380), (22379, 22380), (32379, 32380)];

struct Member {
    child: Option<Child>,
    name: String,
    client: u16,
    peer: u16,
}

/// The members of one etcd cluster.
pub struct EtcdCluster {
    ns: String,
    host: String,
    members: Vec<Member>,
    initial_cluster: String,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `members` (1 to 3) members in namespace `ns` on address
    /// `host` and waits until all are healthy (at most 20 s).
    pub fn start(ns: &str, host: &str, members: usize) -> EtcdCluster {
        assert!((1..=PORTS.len()).contains(&members), "1 to {} members", PORTS.len());
        let ports = &PORTS[..members];
        let initial_cluster = ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://{host}:{p}")).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster {
            ns: ns.to_owned(),
            host: host.to_owned(),
            members: ports
                .iter()
                .enumerate()
                .map(|(i, &(client, peer))| Member { child: None, name: format!("m{i}"), client, peer })
                .collect(),
            initial_cluster,
            dir: TempDir::new("etcd"),
        };
        for i in 0..members {
            cluster.start_member(i);
        }
        cluster.wait_healthy(&(0..members).collect::<Vec<_>>());
        cluster
    }

    /// Starts member `i` (again), on the data it left.
    pub fn start_member(&mut self, i: usize) {
        let log_path = self.dir.path().join(format!("etcd{i}.log"));
        let data = self.dir.path().join(format!("etcd{i}"));
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "etcd member {i} is running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("creating an etcd log");
        let client_url = format!("http://{}:{}", self.host, m.client);
        let peer_url = format!("http://{}:{}", self.host, m.peer);
        // `ip netns exec` execs etcd: the child's pid is etcd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "encapd-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning etcd in {}: {e}", self.ns));
        m.child = Some(child);
    }

    /// Stops member `i` (SIGTERM by pid, SIGKILL after 5 s).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// SIGKILL to member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        EtcdCluster::endpoint_for(&self.host, i)
    }

    /// The client URL member `i` of a cluster on `host` has (or will have).
    pub fn endpoint_for(host: &str, i: usize) -> String {
        format!("http://{host}:{}", PORTS[i].0)
    }

    /// The pids of the running members.
    pub fn pids(&self) -> Vec<i32> {
        self.members.iter().filter_map(|m| m.child.as_ref()).map(|c| c.id() as i32).collect()
    }

    /// Every member's client URL, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Waits (at most 20 s) until `members` answer `endpoint health`.
    pub fn wait_healthy(&self, members: &[usize]) {
        let eps = members.iter().map(|&i| self.endpoint(i)).collect::<Vec<_>>().join(",");
        let ok = wait_for(Duration::from_secs(20), || {
            let o =
                ns_exec(&self.ns, &["etcdctl", "--endpoints", &eps, "--command-timeout=1s", "endpoint", "health"], Duration::from_secs(10));
            o.ok().then_some(())
        });
        assert!(ok.is_some(), "etcd ({eps}) not healthy within 20 s:\n{}", self.logs());
    }

    /// `etcdctl args...` against the running members (its output, success
    /// or not).
    pub fn etcdctl_output(&self, args: &[&str]) -> Output {
        let running = (0..self.members.len()).filter(|&i| self.members[i].child.is_some());
        let eps = running.map(|i| self.endpoint(i)).collect::<Vec<_>>().join(",");
        let mut full = vec!["etcdctl", "--endpoints", &eps, "--command-timeout=3s"];
        full.extend_from_slice(args);
        ns_exec(&self.ns, &full, Duration::from_secs(15))
    }

    /// `etcdctl args...`; its stdout. Panics when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let o = self.etcdctl_output(args);
        assert!(o.ok(), "etcdctl {args:?}: {}", o.text());
        o.stdout
    }

    /// `etcdctl -w json args...`, parsed.
    pub fn etcdctl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.etcdctl(&[&["-w", "json"][..], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl -w json {args:?}: not JSON ({e}): {out}"))
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                format!("-- etcd m{i}:\n{}", std::fs::read_to_string(self.dir.path().join(format!("etcd{i}.log"))).unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
            print_log_if_panicking(&format!("etcd m{i} log"), &self.dir.path().join(format!("etcd{i}.log")));
        }
    }
}
