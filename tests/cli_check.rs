//! The command line without a data path: `encapd check` on good and bad
//! configurations, `run` refusing a bad one, usage errors. No root needed.
//!
//! When run as root, every `encapd` here runs in a fresh, throw-away network
//! namespace (`unshare(CLONE_NEWNET)` in the child), so that even a config a
//! regression let through could not create a TUN in the host's namespace.

use encapd_testbed as common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Output, TempDir, encapd_bin, is_root, run_cmd};

fn encapd(args: &[&str]) -> Output {
    let mut cmd = Command::new(encapd_bin());
    cmd.args(args).env("RUST_LOG", "info");
    if is_root() {
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the async-signal-safe unshare syscall.
        unsafe {
            cmd.pre_exec(|| if libc::unshare(libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    }
    run_cmd(&mut cmd, Duration::from_secs(20))
}

fn check(config: &Path) -> Output {
    encapd(&["check", "--config", config.to_str().unwrap()])
}

const GOOD_NODE: &str = r#"[node]
public_ip = "198.18.0.1"
subnet = "100.96.1.0/24"
subnet6 = "fd00:96:1::/64"

[network]
cidr = "100.96.0.0/16"
cidr6 = "fd00:96::/32"
underlay_mtu = 1500

[dataplane]
workers = 2
io = "uring"

[control]
source = "file"
peers = "peers.toml"
"#;

const GOOD_PEERS: &str = r#"[[peer]]
subnet = "100.96.2.0/24"
subnet6 = "fd00:96:2::/64"
public_ip = "198.18.0.2"

[[peer]]
subnet = "100.96.3.0/24"
public_ip = "198.18.0.3"
port = 9000
"#;

/// GOOD_NODE with line `from` replaced by `to` (which may be several lines
/// or empty); panics if `from` is not there, so a case cannot silently test
/// the good config.
fn node_with(from: &str, to: &str) -> String {
    assert!(GOOD_NODE.contains(from), "{from:?} not in the good config");
    GOOD_NODE.replacen(from, to, 1)
}

struct Case {
    name: &'static str,
    config: String,
    /// Peers file text; None: no peers file is written.
    peers: Option<String>,
    /// Substrings stderr must contain.
    want: &'static [&'static str],
}

fn case(name: &'static str, config: String, peers: Option<&str>, want: &'static [&'static str]) -> Case {
    Case { name, config, peers: peers.map(str::to_owned), want }
}

fn bad_cases() -> Vec<Case> {
    let p = Some(GOOD_PEERS);
    vec![
        case("bad cidr", node_with(r#"cidr = "100.96.0.0/16""#, r#"cidr = "100.96.0.0/33""#), p, &["[network] cidr", "100.96.0.0/33"]),
        case(
            "subnet outside the network",
            node_with(r#"subnet = "100.96.1.0/24""#, r#"subnet = "100.97.1.0/24""#),
            p,
            &["[node] subnet", "100.97.1.0/24", "100.96.0.0/16"],
        ),
        case("unknown io engine", node_with(r#"io = "uring""#, r#"io = "dpdk""#), p, &["[dataplane] io", "dpdk"]),
        case("zero workers", node_with("workers = 2", "workers = 0"), p, &["[dataplane] workers", "0"]),
        case("unknown key", node_with("[node]\n", "[node]\ncolour = \"blue\"\n"), p, &["colour"]),
        case(
            "bad public_ip",
            node_with(r#"public_ip = "198.18.0.1""#, r#"public_ip = "198.18.0.300""#),
            p,
            &["[node] public_ip", "198.18.0.300"],
        ),
        case("port 0", node_with("[network]\n", "[network]\nport = 0\n"), p, &["[network] port", "0"]),
        case(
            "tun name too long",
            node_with("[dataplane]\n", "[dataplane]\ntun = \"encap-name-too-long\"\n"),
            p,
            &["[dataplane] tun", "encap-name-too-long"],
        ),
        case(
            "vxlan peer without a VTEP MAC",
            node_with("[network]\n", "[network]\nbackend = \"vxlan\"\n"),
            p,
            &["peers.toml", "peer #1", "vtep_mac is missing"],
        ),
        case(
            "malformed VTEP MAC",
            node_with("[network]\n", "[network]\nbackend = \"vxlan\"\n").replacen("[node]\n", "[node]\nvtep_mac = \"02:00:c6\"\n", 1),
            p,
            &["[node] vtep_mac = \"02:00:c6\"", "not a MAC address"],
        ),
        case(
            "VNI out of range",
            node_with("[network]\n", "[network]\nbackend = \"vxlan\"\nvni = 16777216\n"),
            p,
            &["[network] vni = 16777216", "between 0 and 16777215"],
        ),
        case(
            "udp peer with a VTEP MAC",
            GOOD_NODE.to_owned(),
            Some(&(GOOD_PEERS.to_owned() + "vtep_mac = \"02:00:c6:12:00:03\"\n")),
            &["peers.toml", "peer #2", "vtep_mac", "udp node cannot reach"],
        ),
        case("unknown backend", node_with("[network]\n", "[network]\nbackend = \"gre\"\n"), p, &["[network] backend", "gre"]),
        case("subnet6 without cidr6", node_with("cidr6 = \"fd00:96::/32\"\n", ""), p, &["subnet6"]),
        case(
            "subnet6 outside cidr6",
            node_with(r#"subnet6 = "fd00:96:1::/64""#, r#"subnet6 = "fd00:97:1::/64""#),
            p,
            &["[node] subnet6", "fd00:97:1::/64"],
        ),
        case("etcd source", node_with(r#"source = "file""#, r#"source = "etcd""#), p, &["[control] source", "etcd"]),
        case("cpus not one per worker", node_with("workers = 2\n", "workers = 2\ncpus = [0]\n"), p, &["[dataplane] cpus"]),
        case("batch 0", node_with("workers = 2\n", "workers = 2\nbatch = 0\n"), p, &["[dataplane] batch"]),
        case("underlay_mtu too small", node_with("underlay_mtu = 1500", "underlay_mtu = 100"), p, &["[network] underlay_mtu", "100"]),
        case("toml syntax error", node_with("[dataplane]\n", "[dataplane\n"), p, &["encapd.toml"]),
        case(
            "missing [node] section",
            node_with("[node]\npublic_ip = \"198.18.0.1\"\nsubnet = \"100.96.1.0/24\"\nsubnet6 = \"fd00:96:1::/64\"\n", ""),
            p,
            &["node"],
        ),
        // Named by the config file and its field, like every other error.
        case("missing peers file", GOOD_NODE.to_owned(), None, &["encapd.toml: [control] peers = ", "peers.toml", "cannot read"]),
        case("empty peers file", GOOD_NODE.to_owned(), Some(""), &["peers.toml", "empty"]),
        case(
            "duplicate peer subnets",
            GOOD_NODE.to_owned(),
            Some(
                "[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n\n[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.3\"\n",
            ),
            &["peer #2", "100.96.2.0/24", "twice", "peer #1"],
        ),
        case(
            "peer subnet overlapping ours",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.1.128/25\"\npublic_ip = \"198.18.0.2\"\n"),
            &["peer #1", "100.96.1.128/25", "overlaps", "100.96.1.0/24"],
        ),
        case(
            "peer subnet outside the network",
            GOOD_NODE.to_owned(),
            Some(
                "[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n\n[[peer]]\nsubnet = \"10.1.2.0/24\"\npublic_ip = \"198.18.0.3\"\n",
            ),
            &["peer #2", "10.1.2.0/24", "outside"],
        ),
        case(
            "peer subnet6 overlapping ours",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/24\"\nsubnet6 = \"fd00:96:1::/48\"\npublic_ip = \"198.18.0.2\"\n"),
            &["peer #1", "fd00:96:1::/48", "overlaps"],
        ),
        case(
            "peer bad public_ip",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.256\"\n"),
            &["peer #1", "public_ip", "198.18.0.256"],
        ),
        case(
            "peer IPv6 underlay on an IPv4 node",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"2001:db8::2\"\n"),
            &["peer #1", "2001:db8::2", "address family"],
        ),
        case(
            "peer port 0",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\nport = 0\n"),
            &["peer #1", "port"],
        ),
        case(
            "peer unknown key",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\nweight = 3\n"),
            &["peers.toml", "weight"],
        ),
        case(
            "peer bad subnet",
            GOOD_NODE.to_owned(),
            Some("[[peer]]\nsubnet = \"100.96.2.0/40\"\npublic_ip = \"198.18.0.2\"\n"),
            &["peer #1", "subnet", "100.96.2.0/40"],
        ),
    ]
}

fn write_case(dir: &TempDir, c: &Case) -> std::path::PathBuf {
    let sub = c.name.replace(' ', "_");
    if let Some(peers) = &c.peers {
        dir.write(&format!("{sub}/peers.toml"), peers);
    }
    dir.write(&format!("{sub}/encapd.toml"), &c.config)
}

/// Both `check` and `run` refuse each bad configuration with exit code 2 and
/// a message naming the file and the field (`run` before creating anything).
#[test]
fn check_and_run_reject_bad_configs_naming_the_field() {
    let dir = TempDir::new("cli-bad");
    let cases = bad_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (c, command) in cases.iter().flat_map(|c| [(c, "check"), (c, "run")]) {
        let path = write_case(&dir, c);
        let o = encapd(&[command, "--config", path.to_str().unwrap()]);
        let code = o.status.code();
        let missing: Vec<&str> = c.want.iter().copied().filter(|w| !o.stderr.contains(w)).collect();
        if code != Some(2) || !missing.is_empty() || o.stdout.contains("subnet table version") {
            failures.push(format!(
                "{command} case {:?}: exit {:?} (want 2), stderr lacks {missing:?}\n  stdout: {}\n  stderr: {}",
                c.name,
                code,
                o.stdout.trim(),
                o.stderr.trim()
            ));
        }
        // Errors name the file they are about.
        else if !o.stderr.contains(dir.path().to_str().unwrap()) {
            failures.push(format!("{command} case {:?}: error does not name the file: {}", c.name, o.stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "{} of {} bad configs mishandled:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A CPU the config's range allows but this machine lacks (it used to
/// panic a worker thread): `run` refuses it by name before creating
/// anything; `check`, which may run on another host than the gateway,
/// notes it as a data-path fact of this host.
#[test]
fn a_cpu_the_machine_lacks_is_refused_by_run_and_noted_by_check() {
    let dir = TempDir::new("cli-cpus");
    let c = Case {
        name: "cpus not on this machine",
        config: GOOD_NODE.replace("workers = 2\n", "workers = 2\ncpus = [0, 4000]\n"),
        peers: Some(GOOD_PEERS.to_owned()),
        want: &[],
    };
    assert!(c.config.contains("cpus = [0, 4000]"), "the fixture changed: {}", c.config);
    let path = write_case(&dir, &c);
    let run = encapd(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "{}", run.text());
    assert!(run.stderr.contains("[dataplane] cpus = [0, 4000]: CPU 4000 is not one this process may run on"), "{}", run.text());
    assert!(!run.stdout.contains("subnet table version") && !run.stderr.contains("panicked"), "{}", run.text());
    let check = encapd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", check.text());
    assert!(check.stdout.contains("not resolvable on this host") && check.stdout.contains("CPU 4000"), "{}", check.text());
}

#[test]
fn check_accepts_a_good_config_and_prints_the_table() {
    let dir = TempDir::new("cli-good");
    dir.write("peers.toml", GOOD_PEERS);
    let path = dir.write("encapd.toml", GOOD_NODE);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0), "good config refused:\n{}", o.text());
    let table_line = |subnet: &str, endpoint: &str| {
        o.stdout.lines().any(|l| l.trim_start().starts_with(subnet) && l.trim_end().ends_with(&format!("-> {endpoint}")))
    };
    assert!(table_line("100.96.2.0/24", "198.18.0.2:8285"), "no table line for 100.96.2.0/24:\n{}", o.stdout);
    assert!(table_line("fd00:96:2::/64", "198.18.0.2:8285"), "no table line for fd00:96:2::/64:\n{}", o.stdout);
    assert!(table_line("100.96.3.0/24", "198.18.0.3:9000"), "per-peer port not applied:\n{}", o.stdout);
    assert!(o.stdout.contains("subnet table version 1 (3 routes, 2 peers)"), "{}", o.stdout);
    assert!(!o.stdout.contains("decapsulates in its kernel"), "no peer says it does:\n{}", o.stdout);
    // A peer that decapsulates in its kernel is marked so.
    dir.write("peers.toml", &GOOD_PEERS.replace("public_ip = \"198.18.0.3\"", "public_ip = \"198.18.0.3\"\nkernel_decap = true"));
    let o = check(&path);
    let marked: Vec<&str> = o.stdout.lines().filter(|l| l.ends_with("(decapsulates in its kernel)")).collect();
    assert!(marked.len() == 1 && marked[0].contains("100.96.3.0/24"), "{}", o.stdout);
    // The effective config is printed with defaults filled in.
    for want in ["public_ip = \"198.18.0.1\"", "port = 8285", "tun = \"encap0\"", "workers = 2", "TUN MTU 1472"] {
        assert!(o.stdout.contains(want), "effective config lacks {want:?}:\n{}", o.stdout);
    }
}

#[test]
fn check_accepts_an_explicitly_empty_peers_file() {
    let dir = TempDir::new("cli-nopeers");
    dir.write("peers.toml", "peer = []\n");
    let path = dir.write("encapd.toml", GOOD_NODE);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0), "{}", o.text());
    assert!(o.stdout.contains("subnet table version 1 (0 routes, 0 peers)"), "{}", o.stdout);
}

#[test]
fn run_refuses_bad_configs_with_exit_2() {
    let dir = TempDir::new("cli-run");
    dir.write("peers.toml", GOOD_PEERS);
    let bad = dir.write("bad.toml", &node_with(r#"io = "uring""#, r#"io = "dpdk""#));
    let o = encapd(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", o.text());
    assert!(o.stderr.contains("[dataplane] io"), "{}", o.stderr);
    // A valid config with an invalid peers file is refused before anything starts.
    dir.write("dup/peers.toml", "[[peer]]\nsubnet = \"100.96.1.0/24\"\npublic_ip = \"198.18.0.2\"\n");
    let dup = dir.write("dup/encapd.toml", GOOD_NODE);
    let o = encapd(&["run", "--config", dup.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", o.text());
    assert!(o.stderr.contains("peer #1") && o.stderr.contains("overlaps"), "{}", o.stderr);
    // Missing config file.
    let o = encapd(&["run", "--config", dir.path().join("nope.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", o.text());
    assert!(o.stderr.contains("nope.toml"), "{}", o.stderr);
}

#[test]
fn usage() {
    let o = encapd(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", o.text());
    assert!(o.stdout.contains("Usage") && o.stdout.contains("check") && o.stdout.contains("run"), "{}", o.stdout);
    let o = encapd(&["--version"]);
    assert_eq!(o.status.code(), Some(0), "{}", o.text());
    assert!(o.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", o.stdout);
    // The commit the binary was built from (benchmark runs record it).
    assert!(o.stdout.contains("(git "), "{}", o.stdout);
    let o = encapd(&["check", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", o.text());
    let o = encapd(&["bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", o.text());
    assert!(o.stderr.contains("bogus"), "{}", o.stderr);
    let o = encapd(&[]);
    assert_eq!(o.status.code(), Some(2), "no subcommand: {}", o.text());
    let o = encapd(&["check"]);
    assert_eq!(o.status.code(), Some(2), "check without --config: {}", o.text());
    assert!(o.stderr.contains("--config"), "{}", o.stderr);
}
