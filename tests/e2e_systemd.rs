//! The unit (`dist/encapd.service`, as the package installs it) under a
//! real systemd: PID 1 of this machine is not systemd, so each test boots
//! Debian 12's systemd 252 in a container (`systemd-nspawn -b` on a root
//! made by `mmdebstrap`), installs the package inside with `dpkg -i`, and
//! drives the service with `systemctl` while traffic crosses it:
//!
//! - `unit_runs_the_file_source_reloads_and_upgrades`: `systemctl enable
//!   --now`, privilege drop (uid `encapd`, no capability in any thread),
//!   `systemctl reload` (a takeover: a new main process), a package
//!   upgrade whose postinst reloads, `systemctl stop`, and a purge whose
//!   prerm stops a running encapd; two UDP streams lose no datagram
//!   across the reload and the upgrade.
//! - `unit_runs_the_etcd_source`: flannel's lease store (a real etcd on
//!   the underlay); the lease state lands in the unit's StateDirectory,
//!   subnet.env in its RuntimeDirectory, and the lease survives a reload.
//! - `unit_runs_the_kernel_path_and_needs_each_privilege_it_grants`:
//!   `kernel_path = "tc"` loads and carries packets with the unit's
//!   CAP_NET_ADMIN + CAP_BPF + CAP_PERFMON and its syscall filter; drop-ins
//!   that take CAP_BPF, CAP_PERFMON, `bpf` or the io_uring calls away show
//!   what each is for. A
//!   reload with the kernel path hands the attached programs and maps to
//!   the successor, which holds no capability and carries on with them,
//!   losing nothing (docs/install.md).
//!
//! The container joins node A's network namespace
//! (`--network-namespace-path`), which the test creates and wires as
//! every other end-to-end test does; node B is a plain encapd (the binary
//! under test) in its own namespace. The container's root is a read-only
//! lower layer with a throw-away upper one (`--volatile=overlay`), made
//! once and kept under `target/tmp/` (about 200 MB, 15 s to 3 min to make,
//! depending on the mirror and the machine's load). nspawn's options grant
//! the container CAP_BPF and the `bpf` and io_uring calls (its own default
//! seccomp filter and capability set leave them out), and the container's
//! `/dev/net/tun` gets mode 0666, what udev's rule gives it on a booted
//! Debian system (the container runs no udev). Each container is powered
//! off, and killed by pid if it does not end, on every exit path.

use encapd_testbed as common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::instance::Encapd;
use common::traffic::UdpStream;
use common::wiring::Wiring;
use common::{CTR_A, CTR_B, Node, Output, TempDir, require_root, require_tools, run_cmd, wait_for};

/// One container at a time (they share the root's lower layer, and this
/// is a 2-core machine).
static CONTAINER_LOCK: Mutex<()> = Mutex::new(());

/// What the root is made with; a change here makes a new root.
const SUITE: &str = "bookworm";
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2";

const UNIT: &str = "encapd.service";

fn runnable() -> bool {
    require_root() && require_tools(&["systemd-nspawn", "mmdebstrap", "nsenter", "etcd", "etcdctl"])
}

/// The packages built by scripts/package.sh, or None (skipped, or a
/// failure with ENCAPD_REQUIRE_ROOT_TESTS=1).
fn packages() -> Option<(PathBuf, PathBuf)> {
    let get = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_file());
    match (get("ENCAPD_DEB"), get("ENCAPD_DEB_UPGRADE")) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => {
            let why = "needs $ENCAPD_DEB and $ENCAPD_DEB_UPGRADE: packages built by scripts/package.sh (scripts/test.sh sets them)";
            assert!(std::env::var("ENCAPD_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"), "{why}, and ENCAPD_REQUIRE_ROOT_TESTS=1");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The Debian root the containers boot, made once by mmdebstrap under
/// target/tmp/ (a file lock keeps two test processes from making it at
/// once; a stamp file marks it complete).
fn debian_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    let root = dir.join(format!("systemd-root-{SUITE}"));
    let stamp = dir.join(format!("systemd-root-{SUITE}.done"));
    let want = format!("mmdebstrap --variant=minbase --include={INCLUDE} {SUITE}\n");
    let lock = File::create(dir.join(format!("systemd-root-{SUITE}.lock"))).unwrap();
    lock.lock().expect("locking the root");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        let _ = std::fs::remove_file(&stamp);
        let _ = std::fs::remove_dir_all(&root);
        let t = Instant::now();
        let o = run_cmd(
            Command::new("mmdebstrap").args(["--variant=minbase", "--include", INCLUDE, "--quiet", SUITE]).arg(&root),
            Duration::from_secs(900),
        );
        assert!(o.ok(), "mmdebstrap failed ({}):\n{}", o.status, o.text());
        std::fs::write(&stamp, &want).unwrap();
        println!("made the container root {} in {:?}", root.display(), t.elapsed());
    }
    root
}

/// A booted container: systemd-nspawn, its systemd, and a way to run
/// commands inside (`nsenter` into all of the init's namespaces).
struct Container {
    nspawn: Child,
    /// The container's systemd, as a pid of this machine.
    init: i32,
    log: PathBuf,
}

impl Container {
    /// Boots `root` in network namespace `netns`, with the directory
    /// `debs` at /mnt/encapd; returns once systemd reports the system up.
    fn boot(root: &Path, netns: &str, debs: &Path, log: &Path) -> Container {
        let t = Instant::now();
        let file = File::create(log).unwrap();
        // A unified cgroup hierarchy in the container, as a booted Debian
        // 12 has, although this machine mounts cgroup v1: in a container
        // on the legacy hierarchy systemd does not wait for a main process
        // that is not its child (the successor after a takeover) and
        // follows SIGTERM at once with SIGKILL on `systemctl stop`.
        let nspawn = Command::new("systemd-nspawn")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args(["-q", "-b", "--register=no", "--keep-unit", "--volatile=overlay", "-D"])
            .arg(root)
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .args([
                "--capability=CAP_NET_ADMIN,CAP_BPF,CAP_PERFMON",
                "--system-call-filter=bpf io_uring_setup io_uring_enter io_uring_register",
            ])
            .arg(format!("--bind-ro={}:/mnt/encapd", debs.display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawning systemd-nspawn");
        let mut c = Container { init: 0, nspawn, log: log.to_owned() };
        let pid = c.nspawn.id();
        let init = wait_for(Duration::from_secs(60), || {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd"))
        });
        c.init = init.unwrap_or_else(|| panic!("no systemd in the container within 60 s:\n{}", c.log_text()));
        let up = wait_for(Duration::from_secs(120), || {
            let state = c.exec(&["systemctl", "is-system-running"]).stdout;
            matches!(state.trim(), "running" | "degraded").then_some(state)
        });
        let state = up.unwrap_or_else(|| panic!("the container's systemd did not come up within 120 s:\n{}", c.log_text()));
        if state.trim() == "degraded" {
            println!("container up, degraded: {}", c.exec(&["systemctl", "--failed", "--no-legend"]).stdout.trim());
        }
        println!(
            "booted {} in {:?}: {}",
            c.exec(&["systemctl", "--version"]).stdout.lines().next().unwrap_or("?"),
            t.elapsed(),
            state.trim()
        );
        // What udev's 50-udev-default.rules gives /dev/net/tun on a booted
        // Debian system; nspawn makes the node 0600 and runs no udev.
        c.must(&["chmod", "0666", "/dev/net/tun"]);
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `args` inside the container (timeout 200 s).
    fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "-a", "--"]).args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_cmd(&mut cmd, Duration::from_secs(200))
    }

    fn must(&self, args: &[&str]) -> Output {
        let o = self.exec(args);
        assert!(o.ok(), "in the container, `{}` failed ({}):\n{}\njournal:\n{}", args.join(" "), o.status, o.text(), self.journal());
        o
    }

    /// A file of the container's file system, written from outside.
    fn write(&self, path: &str, text: &str) {
        let outside = PathBuf::from(format!("/proc/{}/root{path}", self.init));
        std::fs::write(&outside, text).unwrap_or_else(|e| panic!("writing {path} in the container: {e}"));
    }

    fn journal(&self) -> String {
        self.exec(&["journalctl", "-u", UNIT, "--no-pager", "-o", "short-monotonic"]).stdout
    }

    /// The journal's position now (`--after-cursor` reads what follows).
    fn journal_cursor(&self) -> String {
        let o = self.must(&["journalctl", "-n", "0", "--show-cursor", "--no-pager"]);
        let line = o.stdout.lines().find_map(|l| l.strip_prefix("-- cursor: ")).map(str::to_owned);
        line.unwrap_or_else(|| panic!("journalctl printed no cursor: {}", o.stdout))
    }

    /// `systemctl show` property `name` of the unit.
    fn property(&self, name: &str) -> String {
        self.must(&["systemctl", "show", "-p", name, "--value", UNIT]).stdout.trim().to_owned()
    }

    fn main_pid(&self) -> u32 {
        self.property("MainPID").parse().unwrap()
    }

    /// Waits until the unit is active with a main process; its pid.
    fn wait_active(&self) -> u32 {
        let active = wait_for(Duration::from_secs(30), || (self.property("ActiveState") == "active" && self.main_pid() != 0).then_some(()));
        assert!(active.is_some(), "{UNIT} not active within 30 s:\n{}", self.journal());
        self.main_pid()
    }

    /// Installs a package from /mnt/encapd (dpkg -i; the container has no
    /// network to fetch dependencies from, and needs none).
    fn install(&self, deb: &Path) -> Duration {
        let t = Instant::now();
        let name = deb.file_name().unwrap().to_str().unwrap();
        self.must(&["dpkg", "-i", &format!("/mnt/encapd/{name}")]);
        t.elapsed()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- container journal of {UNIT} ----\n{}----", self.journal());
        }
        if self.init != 0 {
            let _ = run_cmd(
                Command::new("nsenter").args(["-t", &self.init.to_string(), "-a", "--", "systemctl", "poweroff"]),
                Duration::from_secs(30),
            );
        }
        if wait_for(Duration::from_secs(30), || self.nspawn.try_wait().ok().flatten()).is_none() {
            // nspawn may stay after poweroff (shared/DESIGN.md): end it,
            // and the container's init, by pid.
            let _ = self.nspawn.kill();
            if self.init != 0 {
                common::process::signal(self.init, libc::SIGKILL);
            }
            let _ = self.nspawn.wait();
        }
    }
}

/// Node A (the container) and node B (a plain encapd), their containers
/// wired, and the directory the packages are offered from.
struct Rig {
    wiring: Wiring,
    dir: TempDir,
    debs: PathBuf,
    next: PathBuf,
}

impl Rig {
    fn new(tag: &str, deb: &Path, next: &Path) -> Rig {
        let wiring = Wiring::build(false, false);
        wiring.attach_container(Node::A, "100.96.1.1/24", "100.96.1.2/24", None);
        wiring.attach_container(Node::B, "100.96.2.1/24", "100.96.2.3/24", None);
        let dir = TempDir::new(&format!("{}-{tag}", wiring.prefix()));
        let debs = dir.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        for d in [deb, next] {
            std::fs::copy(d, debs.join(d.file_name().unwrap())).unwrap();
        }
        Rig { wiring, dir, debs, next: next.to_owned() }
    }

    fn boot(&self, root: &Path) -> Container {
        Container::boot(root, &self.wiring.node_a, &self.debs, &self.dir.path().join("nspawn.log"))
    }

    /// Node B's encapd (the binary under test) with `control` as its
    /// [control] section and `dataplane` lines.
    fn start_node_b(&self, control: &str, dataplane: &str) -> Encapd {
        let config = self.dir.write(
            "b/encapd.toml",
            &format!(
                "[node]\npublic_ip = \"198.18.0.2\"\nsubnet = \"100.96.2.0/24\"\n\n[network]\ncidr = \"100.96.0.0/16\"\n\n\
                 [dataplane]\nworkers = 2\n{dataplane}\n[control]\n{control}subnet_env = \"subnet.env\"\n\n[process]\ncontrol_socket = \"b.sock\"\n"
            ),
        );
        let mut b = Encapd::spawn(&self.wiring.node_b, &config, &self.dir.path().join("b.log"), &[]);
        b.wait_ready(Duration::from_secs(60));
        b
    }

    /// Two 1,000/s UDP streams, A to B and B to A, of `secs` seconds.
    fn streams(&self, secs: u32) -> (UdpStream, UdpStream) {
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (CTR_A.parse().unwrap(), CTR_B.parse().unwrap());
        let max = 1_000 * secs;
        let ab = UdpStream::start(&self.wiring.ctr_a, a, &self.wiring.ctr_b, (b, 5401).into(), 1_000, max);
        let ba = UdpStream::start(&self.wiring.ctr_b, b, &self.wiring.ctr_a, (a, 5401).into(), 1_000, max);
        let flowing = ab.wait_flowing(200, Duration::from_secs(15)) && ba.wait_flowing(200, Duration::from_secs(15));
        assert!(flowing, "the streams through the container's encapd do not flow");
        (ab, ba)
    }
}

fn node_a_config(control: &str, dataplane: &str, subnet: bool) -> String {
    let subnet = if subnet { "subnet = \"100.96.1.0/24\"\n" } else { "" };
    format!(
        "[node]\npublic_ip = \"198.18.0.1\"\n{subnet}\n[network]\ncidr = \"100.96.0.0/16\"\n\n[dataplane]\nworkers = 2\n{dataplane}\n\
         [control]\n{control}\n[process]\nuser = \"encapd\"\n"
    )
}

const PEER_B: &str = "[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n";
const PEER_A: &str = "[[peer]]\nsubnet = \"100.96.1.0/24\"\npublic_ip = \"198.18.0.1\"\n";

/// Every thread of the container's process `pid` runs as `encapd` with no
/// capability (read inside the container: its pids are its own).
fn assert_unprivileged(c: &Container, pid: u32) {
    let uid = c.must(&["id", "-u", "encapd"]).stdout.trim().to_owned();
    let tasks = c.must(&["ls", &format!("/proc/{pid}/task")]).stdout;
    let mut threads = 0;
    for tid in tasks.split_whitespace() {
        let status = c.exec(&["cat", &format!("/proc/{pid}/task/{tid}/status")]).stdout;
        if status.is_empty() {
            continue; // the thread ended meanwhile
        }
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned();
        assert!(field("Uid:").split_whitespace().all(|u| u == uid), "thread {tid}: Uid {} (encapd is {uid})", field("Uid:"));
        for cap in ["CapEff:", "CapPrm:", "CapAmb:"] {
            assert_eq!(u64::from_str_radix(&field(cap), 16).unwrap(), 0, "thread {tid} ({}) {cap} {}", field("Name:"), field(cap));
        }
        threads += 1;
    }
    assert!(threads >= 3, "only {threads} threads read");
}

/// Both streams to the end, none lost; on a loss, both encapds' counters
/// say where.
fn assert_lossless(ab: UdpStream, ba: UdpStream, what: &str, b: &mut Encapd, c: &Container) {
    let (ab, ba) = (ab.complete(), ba.complete());
    println!("{what}: A->B {} sent, {} lost; B->A {} sent, {} lost", ab.sent, ab.lost(), ba.sent, ba.lost());
    if ab.lost() + ba.lost() > 0 {
        eprintln!("node B's counters: {:?}", b.counters());
        let _ = c.exec(&["systemctl", "kill", "--kill-whom=main", "-s", "SIGUSR1", UNIT]);
        std::thread::sleep(Duration::from_secs(1));
        eprintln!("node A's journal:\n{}", c.journal());
    }
    assert_eq!((ab.lost(), ba.lost()), (0, 0), "datagrams lost across {what}");
}

/// `systemctl reload` and how long it took; panics unless the main
/// process changed.
fn reload(c: &Container) -> (u32, Duration) {
    let before = c.main_pid();
    let t = Instant::now();
    c.must(&["systemctl", "reload", UNIT]);
    let took = t.elapsed();
    let after = c.wait_active();
    assert_ne!(before, after, "systemctl reload left the same main process");
    assert!(c.property("StatusText").contains(&format!("took over from pid {before}")), "status: {}", c.property("StatusText"));
    (after, took)
}

#[test]
fn unit_runs_the_file_source_reloads_and_upgrades() {
    if !runnable() {
        return;
    }
    let Some((deb, next)) = packages() else { return };
    let _lock = CONTAINER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = debian_root();
    let rig = Rig::new("systemd-file", &deb, &next);
    rig.dir.write("b/peers.toml", PEER_A);
    let mut b = rig.start_node_b("source = \"file\"\npeers = \"peers.toml\"\n", "");
    let c = rig.boot(&root);
    println!("dpkg -i {} in the container: {:?}", deb.display(), c.install(&deb));
    c.write("/etc/encapd/encapd.toml", &node_a_config("source = \"file\"\npeers = \"peers.toml\"\n", "", true));
    c.write("/etc/encapd/peers.toml", PEER_B);

    let t = Instant::now();
    c.must(&["systemctl", "enable", "--now", UNIT]);
    let first = c.wait_active();
    println!("systemctl enable --now: active in {:?}, main pid {first}", t.elapsed());
    assert_eq!(c.property("StatusText"), "forwarding");
    assert_unprivileged(&c, first);

    let (ab, ba) = rig.streams(12);
    let (second, took) = reload(&c);
    println!("systemctl reload: main pid {first} -> {second} in {took:?}");
    assert_unprivileged(&c, second);
    std::thread::sleep(Duration::from_secs(2));

    // A newer package over the running service: the postinst reloads.
    let took = c.install(&rig.next);
    let third = c.wait_active();
    assert_ne!(third, second, "the package upgrade did not hand over to a new process:\n{}", c.journal());
    assert!(c.must(&["dpkg-query", "-W", "-f=${Version}", "encapd"]).stdout.ends_with("-2"));
    let exe = c.must(&["readlink", &format!("/proc/{third}/exe")]).stdout;
    assert_eq!(exe.trim(), "/usr/sbin/encapd", "the new main process runs {exe}");
    println!("dpkg -i {} (postinst reload): main pid {second} -> {third}, {took:?}", rig.next.display());
    assert_lossless(ab, ba, "a reload and a package upgrade under systemd", &mut b, &c);

    // Stop: the TUN goes, subnet.env stays (RuntimeDirectoryPreserve=yes).
    c.must(&["systemctl", "stop", UNIT]);
    assert_eq!(c.property("ActiveState"), "inactive");
    let gone = wait_for(Duration::from_secs(10), || (!common::takeover::tun_present(&rig.wiring.node_a)).then_some(()));
    assert!(gone.is_some(), "the TUN stayed after systemctl stop");
    assert!(c.exec(&["test", "-s", "/run/flannel/subnet.env"]).ok(), "subnet.env went with the stop");

    // A purge of a running service: the prerm stops it, the postrm cleans up.
    c.must(&["systemctl", "start", UNIT]);
    c.wait_active();
    c.must(&["dpkg", "--purge", "encapd"]);
    assert!(c.property("LoadState") == "not-found" || c.property("ActiveState") == "inactive", "encapd still runs after the purge");
    let gone = wait_for(Duration::from_secs(10), || (!common::takeover::tun_present(&rig.wiring.node_a)).then_some(()));
    assert!(gone.is_some(), "the TUN stayed after the purge");
    for dir in ["/etc/encapd", "/var/lib/encapd", "/run/encapd", "/run/flannel"] {
        assert!(!c.exec(&["test", "-e", dir]).ok(), "{dir} survived the purge");
    }
}

#[test]
fn unit_runs_the_etcd_source() {
    if !runnable() {
        return;
    }
    let Some((deb, next)) = packages() else { return };
    let _lock = CONTAINER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = debian_root();
    let rig = Rig::new("systemd-etcd", &deb, &next);
    let etcd = EtcdCluster::start(&rig.wiring.node_b, "198.18.0.2", 1);
    etcd.etcdctl(&["put", "/coreos.com/network/config", r#"{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"udp"}}"#]);
    let endpoint = etcd.endpoint(0);
    let control = format!("source = \"etcd\"\nendpoints = [\"{endpoint}\"]\n");
    let mut b = rig.start_node_b(&control, "");
    let c = rig.boot(&root);
    c.install(&deb);
    c.write("/etc/encapd/encapd.toml", &node_a_config(&control, "", true));

    c.must(&["systemctl", "start", UNIT]);
    let first = c.wait_active();
    // StateDirectory= and RuntimeDirectory= are where encapd writes.
    let state = c.must(&["cat", "/var/lib/encapd/encapd-etcd-lease.json"]).stdout;
    assert!(state.contains("100.96.1.0"), "lease state: {state}");
    let env = c.must(&["cat", "/run/flannel/subnet.env"]).stdout;
    assert!(env.contains("FLANNEL_SUBNET=100.96.1.1/24"), "subnet.env: {env}");
    let lease = etcd.etcdctl(&["get", "/coreos.com/network/subnets/100.96.1.0-24", "--print-value-only"]);
    assert!(lease.contains("198.18.0.1"), "node A's lease in etcd: {lease}");
    assert_unprivileged(&c, first);

    let (ab, ba) = rig.streams(8);
    let (second, took) = reload(&c);
    println!("etcd source: systemctl reload: main pid {first} -> {second} in {took:?}");
    assert_lossless(ab, ba, "a reload with the etcd source", &mut b, &c);
    let after = etcd.etcdctl(&["get", "/coreos.com/network/subnets/100.96.1.0-24", "--print-value-only"]);
    assert_eq!(after, lease, "the lease changed across the reload");
    c.must(&["systemctl", "stop", UNIT]);
    assert_eq!(c.property("ActiveState"), "inactive");
}

#[test]
fn unit_runs_the_kernel_path_and_needs_each_privilege_it_grants() {
    if !runnable() {
        return;
    }
    let Some((deb, next)) = packages() else { return };
    let _lock = CONTAINER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = debian_root();
    let rig = Rig::new("systemd-kernel", &deb, &next);
    rig.dir.write("b/peers.toml", &format!("{PEER_A}kernel_decap = true\n"));
    let mut b = rig.start_node_b("source = \"file\"\npeers = \"peers.toml\"\n", "kernel_path = \"tc\"\n");
    let c = rig.boot(&root);
    c.install(&deb);
    c.write("/etc/encapd/encapd.toml", &node_a_config("source = \"file\"\npeers = \"peers.toml\"\n", "kernel_path = \"tc\"\n", true));
    c.write("/etc/encapd/peers.toml", &format!("{PEER_B}kernel_decap = true\n"));

    c.must(&["systemctl", "start", UNIT]);
    let pid = c.wait_active();
    assert!(c.journal().contains("kernel path attached"), "no kernel path:\n{}", c.journal());
    assert_unprivileged(&c, pid);
    let (ab, ba) = rig.streams(4);
    assert_lossless(ab, ba, "the kernel path under the unit", &mut b, &c);
    let metrics = common::counters::scrape(&rig.wiring.node_a).expect("node A's /metrics");
    let carried = common::counters::metric_sum(&metrics, "encapd_kernel_packets_total", &[]);
    // 8,000 datagrams, 4,000 encapsulated and 4,000 decapsulated here;
    // a few may take the workers' path (before a neighbour is resolved).
    assert!(carried >= 7_200.0, "the kernel path carried {carried} of the streams' 8,000 packets");
    println!("kernel path under the unit: {carried} packets in the kernel");

    // A reload: the successor has no capability and could not load the
    // programs, so the running encapd hands it the attached links and the
    // maps over the takeover socket; it carries on with them, and nothing
    // is lost across the handover.
    let (ab, ba) = rig.streams(8);
    let (second, took) = reload(&c);
    println!("kernel path: systemctl reload: main pid {pid} -> {second} in {took:?}");
    assert_unprivileged(&c, second);
    assert!(
        c.journal().contains("kernel path carried on from the predecessor"),
        "the successor did not carry on with the kernel path:\n{}",
        c.journal()
    );
    assert_lossless(ab, ba, "a reload with the kernel path", &mut b, &c);
    let metrics = common::counters::scrape(&rig.wiring.node_a).expect("node A's /metrics after the reload");
    let after = common::counters::metric_sum(&metrics, "encapd_kernel_packets_total", &[]);
    assert!(after >= 12_000.0, "the kernel path carried {after} packets in all, not the reload's streams too");
    c.must(&["systemctl", "stop", UNIT]);

    // Each privilege the unit grants, taken away by a drop-in: what fails.
    let cases: [(&str, &str, &str); 4] = [
        // An empty assignment resets a capability list; a second line sets it.
        (
            "CAP_BPF",
            "[Service]\nAmbientCapabilities=\nAmbientCapabilities=CAP_NET_ADMIN CAP_PERFMON\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_PERFMON\n",
            "loading the eBPF object",
        ),
        (
            "CAP_PERFMON",
            "[Service]\nAmbientCapabilities=\nAmbientCapabilities=CAP_NET_ADMIN CAP_BPF\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_BPF\n",
            "the verifier refused it",
        ),
        // A `~` list after the unit's allow list takes calls out of it.
        ("bpf(2)", "[Service]\nSystemCallFilter=~bpf\n", "loading the eBPF object"),
        ("io_uring", "[Service]\nSystemCallFilter=~io_uring_setup io_uring_enter io_uring_register\n", "mmsg"),
    ];
    c.must(&["mkdir", "-p", "/run/systemd/system/encapd.service.d"]);
    for (what, dropin, want) in cases {
        c.write("/run/systemd/system/encapd.service.d/test.conf", dropin);
        c.must(&["systemctl", "daemon-reload"]);
        let cursor = c.journal_cursor();
        let _ = c.exec(&["systemctl", "start", UNIT]);
        let journal = wait_for(Duration::from_secs(20), || {
            let text = c.must(&["journalctl", "-u", UNIT, "--no-pager", "--after-cursor", &cursor]).stdout;
            text.contains(want).then_some(text)
        });
        let journal = journal.unwrap_or_else(|| c.must(&["journalctl", "-u", UNIT, "--no-pager", "--after-cursor", &cursor]).stdout);
        assert!(journal.contains(want), "without {what}: the journal does not say {want:?}:\n{journal}");
        println!("without {what}: {}", journal.lines().find(|l| l.contains(want)).unwrap_or_default().trim());
        let _ = c.exec(&["systemctl", "stop", UNIT]);
        let _ = c.exec(&["systemctl", "reset-failed", UNIT]);
    }
    c.must(&["rm", "-r", "/run/systemd/system/encapd.service.d"]);
    c.must(&["systemctl", "daemon-reload"]);
}
