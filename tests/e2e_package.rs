//! The Debian package, on this machine, as an operator meets it:
//!
//! - `package_installs_checks_and_purges_clean`: lintian passes; `dpkg -i`
//!   then `apt-get -f install` install it (apt resolving what dpkg could
//!   not); `dpkg --verify` finds every file as packaged; `encapd
//!   --version` names the version and the commit; `encapd check` refuses
//!   the shipped example, quoting the value to fill in, and accepts a copy
//!   with `public_ip` and `subnet` filled in; `dpkg --purge` leaves no
//!   path behind that was not there before (`dpkg -L` before, the paths
//!   after), nor the configuration, state or runtime directories; the
//!   system user stays, as Debian policy has it for system users.
//! - `package_upgrade_hands_over_without_losing_a_datagram`: two nodes run
//!   the packaged `/usr/sbin/encapd` in namespaces of their own while UDP
//!   streams cross them both ways; a newer package (`-2`) is installed
//!   over them and each node is upgraded with `encapd upgrade`, what the
//!   unit's `ExecReload=` runs; the new binary takes over, the old
//!   process exits, and no datagram is lost. PID 1 here is not systemd, so
//!   the postinst leaves the reload to the operator (docs/install.md);
//!   tests/e2e_systemd.rs upgrades through the postinst under systemd.
//!
//! Installing a package changes this machine's root file system: that is
//! how a package is tested. Each test holds [`PACKAGE_LOCK`] (one package
//! installation at a time), refuses to run over an encapd package it did
//! not install, and purges on every exit path (the [`Installed`] guard),
//! removing the system user too if the test created it. No service is
//! started in the root namespace: the maintainer scripts touch services
//! only under systemd (`/run/systemd/system`), and the daemons run in
//! namespaces the test made.
//!
//! The packages come from `scripts/package.sh` (scripts/test.sh builds
//! them before the tests and names them): `$ENCAPD_DEB` (revision 1) and
//! `$ENCAPD_DEB_UPGRADE` (revision 2, the same code).

use encapd_testbed as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::takeover::{Orphan, exited};
use common::traffic::UdpStream;
use common::wiring::Wiring;
use common::{CTR_A, CTR_B, Node, Output, TempDir, encapd_bin, must, require_root, require_tools, run, run_cmd, wait_for};

/// One package installation at a time on this machine.
static PACKAGE_LOCK: Mutex<()> = Mutex::new(());

const PACKAGE: &str = "encapd";
const INSTALLED_BIN: &str = "/usr/sbin/encapd";
const USER: &str = "encapd";

/// The directories the package or the daemon may create outside its file
/// list: none of them may survive a purge.
const DATA_DIRS: [&str; 4] = ["/etc/encapd", "/var/lib/encapd", "/run/encapd", "/run/flannel"];

/// The package built by scripts/package.sh, from `var`; None (skipped, or
/// a failure with ENCAPD_REQUIRE_ROOT_TESTS=1) when it is not there.
fn package_from_env(var: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_file());
    if path.is_none() {
        let why = format!("needs ${var}: a .deb built by scripts/package.sh (scripts/test.sh builds it and sets it)");
        assert!(std::env::var("ENCAPD_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"), "{why}, and ENCAPD_REQUIRE_ROOT_TESTS=1");
        eprintln!("skipped: {why}");
    }
    path
}

fn runnable() -> bool {
    require_root() && require_tools(&["dpkg", "dpkg-deb", "apt-get", "lintian", "userdel"])
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    PACKAGE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_long(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    run_cmd(&mut cmd, timeout)
}

fn package_status() -> String {
    run("dpkg-query", &["-W", "-f=${Status} ${Version}", PACKAGE]).stdout
}

fn user_exists() -> bool {
    run("getent", &["passwd", USER]).ok()
}

/// The paths a .deb holds, as `dpkg -L` names them ("/usr/sbin/encapd").
fn deb_paths(deb: &Path) -> BTreeSet<PathBuf> {
    let list = must("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    list.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/'))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The package installed by a test: purged when dropped, on every exit
/// path; the system user removed then too if the test created it.
struct Installed {
    user_existed: bool,
    purged: bool,
}

impl Installed {
    /// `dpkg -i DEB`, then `apt-get -f install` for what dpkg could not
    /// resolve. Panics (after purging) unless the package ends up installed.
    fn install(deb: &Path) -> Installed {
        let status = package_status();
        assert!(
            status.is_empty() || status.contains("not-installed"),
            "dpkg knows a package {PACKAGE} on this machine already ({status}); the test installs and purges its own and will not touch it"
        );
        let guard = Installed { user_existed: user_exists(), purged: false };
        guard.install_over(deb);
        guard
    }

    /// Installs `deb` over whatever version is there (an upgrade).
    fn install_over(&self, deb: &Path) -> Duration {
        let start = Instant::now();
        let dpkg = run_long("dpkg", &["-i", deb.to_str().unwrap()], Duration::from_secs(120));
        if !dpkg.ok() {
            eprintln!("dpkg -i left dependencies to apt ({}):\n{}", dpkg.status, dpkg.text());
        }
        let apt = run_long("apt-get", &["-f", "install", "-y", "-q", "--no-install-recommends"], Duration::from_secs(300));
        assert!(apt.ok(), "apt-get -f install failed ({}):\n{}", apt.status, apt.text());
        let status = package_status();
        assert!(
            status.starts_with("install ok installed"),
            "{PACKAGE} is not installed after dpkg -i and apt-get -f install: {status:?}\n{}",
            dpkg.text()
        );
        start.elapsed()
    }

    fn purge(&mut self) -> Output {
        self.purged = true;
        run_long("dpkg", &["--purge", PACKAGE], Duration::from_secs(120))
    }

    /// Removes the system user the package created, if it was not there before.
    fn remove_user_we_created(&self) {
        if !self.user_existed && user_exists() {
            let o = run("userdel", &[USER]);
            assert!(o.ok(), "userdel {USER}: {}", o.text());
            let _ = run("groupdel", &[USER]);
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let o = self.purge();
            if !o.ok() {
                eprintln!("warning: dpkg --purge {PACKAGE} failed on clean-up: {}", o.text());
            }
        }
        if !self.user_existed && user_exists() {
            let _ = run("userdel", &[USER]);
            let _ = run("groupdel", &[USER]);
        }
    }
}

/// `encapd --version` of `bin`: (version, commit).
fn version_of(bin: &Path) -> (String, String) {
    let o = must(bin.to_str().unwrap(), &["--version"]);
    let line = o.stdout.trim();
    let rest = line.strip_prefix("encapd ").unwrap_or_else(|| panic!("{bin:?} --version: {line:?}"));
    let (version, commit) = rest.split_once(" (git ").unwrap_or_else(|| panic!("{bin:?} --version names no commit: {line:?}"));
    (version.to_owned(), commit.trim_end_matches(')').to_owned())
}

#[test]
fn package_installs_checks_and_purges_clean() {
    if !runnable() {
        return;
    }
    let Some(deb) = package_from_env("ENCAPD_DEB") else { return };
    let _lock = lock();

    let t = Instant::now();
    let lint = run_long("lintian", &["--fail-on", "error,warning,info", "--display-info", deb.to_str().unwrap()], Duration::from_secs(300));
    assert!(lint.ok(), "lintian {}:\n{}", deb.display(), lint.text());
    println!("lintian: clean in {:?}", t.elapsed());

    // What the package will add, and which of those paths exist already
    // (shared directories such as /usr/share/man/man8).
    let paths = deb_paths(&deb);
    let existed: BTreeSet<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
    for dir in DATA_DIRS {
        assert!(!Path::new(dir).exists(), "{dir} exists before the package is installed; the test cannot tell what the purge leaves");
    }

    let t = Instant::now();
    let mut installed = Installed::install(&deb);
    println!("installed {} in {:?}", deb.display(), t.elapsed());

    // dpkg's list is the package's contents; every file is as packaged.
    let listed: BTreeSet<PathBuf> = must("dpkg", &["-L", PACKAGE]).stdout.lines().filter(|l| *l != "/.").map(PathBuf::from).collect();
    assert_eq!(listed, paths, "dpkg -L differs from the .deb's contents");
    let verify = must("dpkg", &["--verify", PACKAGE]);
    assert!(verify.stdout.trim().is_empty(), "dpkg --verify {PACKAGE}: {}", verify.stdout);
    for want in [
        INSTALLED_BIN,
        "/usr/lib/systemd/system/encapd.service",
        "/usr/lib/sysusers.d/encapd.conf",
        "/usr/lib/tmpfiles.d/encapd.conf",
        "/usr/share/man/man8/encapd.8.gz",
        "/usr/share/bash-completion/completions/encapd",
        "/usr/share/doc/encapd/copyright",
        "/usr/share/doc/encapd/changelog.Debian.gz",
    ] {
        assert!(listed.contains(Path::new(want)), "the package lacks {want}");
    }
    let conffiles = must("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]).stdout;
    for want in ["/etc/encapd/encapd.toml", "/etc/encapd/peers.toml"] {
        assert!(conffiles.contains(want), "{want} is not a conffile: {conffiles}");
    }
    let passwd = must("getent", &["passwd", USER]).stdout;
    assert!(passwd.trim_end().ends_with(":/nonexistent:/usr/sbin/nologin"), "the system user: {passwd}");

    // The version, and the commit the binary under test says it is built
    // from (scripts/test.sh builds both from this tree): a real commit,
    // never "unknown".
    let (version, commit) = version_of(Path::new(INSTALLED_BIN));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let commit_hash = commit.strip_suffix("-dirty").unwrap_or(&commit);
    assert!(commit_hash.len() == 40 && commit_hash.bytes().all(|b| b.is_ascii_hexdigit()), "encapd --version names no commit: {commit:?}");
    assert_eq!(version_of(&encapd_bin()).1, commit, "the packaged binary and {} name different commits", encapd_bin().display());
    println!("encapd --version: {version} (git {commit})");

    // The shipped example is refused, naming what to fill in ...
    let example = Path::new("/etc/encapd/encapd.toml");
    let refused = run(INSTALLED_BIN, &["check", "--config", example.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "check of the shipped example: {}", refused.text());
    assert!(refused.stderr.contains("[node] public_ip = \"FILL IN:"), "the refusal does not say what to fill in: {}", refused.stderr);
    println!("encapd check on the shipped example: {}", refused.stderr.trim());

    // ... and accepted once public_ip and subnet are filled into a copy.
    let dir = TempDir::new("package-check");
    let text = std::fs::read_to_string(example).unwrap();
    std::fs::copy("/etc/encapd/peers.toml", dir.path().join("peers.toml")).unwrap();
    let fill = |text: &str, key: &str, value: &str| -> String {
        let line = text.lines().find(|l| l.starts_with(&format!("{key} = \"FILL IN"))).unwrap_or_else(|| panic!("no {key} to fill in"));
        text.replacen(line, &format!("{key} = \"{value}\""), 1)
    };
    let half = dir.write("half.toml", &fill(&text, "public_ip", "198.18.0.1"));
    let o = run(INSTALLED_BIN, &["check", "--config", half.to_str().unwrap()]);
    assert!(o.status.code() == Some(2) && o.stderr.contains("[node] subnet = \"FILL IN:"), "public_ip filled, subnet not: {}", o.text());
    let filled = dir.write("encapd.toml", &fill(&fill(&text, "public_ip", "198.18.0.1"), "subnet", "10.244.1.0/24"));
    let o = run(INSTALLED_BIN, &["check", "--config", filled.to_str().unwrap()]);
    assert!(o.ok(), "check of the filled-in example failed: {}", o.text());
    assert!(o.stdout.contains("10.244.1.0/24"), "{}", o.stdout);

    // Purge: nothing is left that the install added.
    let t = Instant::now();
    let purge = installed.purge();
    assert!(purge.ok(), "dpkg --purge: {}", purge.text());
    println!("purged in {:?}", t.elapsed());
    let status = package_status();
    assert!(status.is_empty() || status.contains("not-installed"), "after the purge dpkg still knows {PACKAGE}: {status:?}");
    let left: Vec<&PathBuf> = paths.iter().filter(|p| !existed.contains(*p) && p.exists()).collect();
    assert!(left.is_empty(), "left behind by the purge: {left:?}");
    for dir in DATA_DIRS {
        assert!(!Path::new(dir).exists(), "{dir} survived the purge");
    }
    let state = run("deb-systemd-helper", &["debian-installed", "encapd.service"]);
    assert!(!state.ok(), "deb-systemd-helper still knows encapd.service after the purge");
    // Debian policy: a system user stays after a purge (files it owns may
    // remain; a reinstall reuses it). The test removes it if it made it.
    assert!(user_exists(), "the purge removed the system user, which Debian leaves in place");
    installed.remove_user_we_created();
}

/// An encapd the test started from the installed package in a namespace,
/// stopped on drop (SIGTERM, then SIGKILL) if still running.
struct PackagedNode {
    child: std::process::Child,
    config: PathBuf,
    log: PathBuf,
}

impl PackagedNode {
    fn start(ns: &str, config: &Path, log: &Path) -> PackagedNode {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, INSTALLED_BIN, "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        PackagedNode { child, config: config.to_owned(), log: log.to_owned() }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(20), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("encapd exited during start-up ({st}):\n{}", self.log_text());
            }
            self.log_text().contains("ready: forwarding").then_some(())
        });
        assert!(ready.is_some(), "encapd not ready within 20 s:\n{}", self.log_text());
    }

    /// `encapd upgrade --config CONFIG` with the installed (new) binary:
    /// the pid of the process that took over, and how long it took.
    fn upgrade(&mut self) -> (i32, Duration) {
        let o = run_cmd(Command::new(INSTALLED_BIN).args(["upgrade", "--config"]).arg(&self.config), Duration::from_secs(160));
        assert!(o.ok(), "encapd upgrade ({}): {}\nlog:\n{}", o.status, o.text(), self.log_text());
        let pid = o.stdout.split("pid ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok());
        let pid = pid.unwrap_or_else(|| panic!("encapd upgrade did not name the new process: {}", o.stdout));
        let old = wait_for(Duration::from_secs(10), || self.child.try_wait().ok().flatten());
        let status =
            old.unwrap_or_else(|| panic!("the old encapd (pid {}) still runs 10 s after the handover:\n{}", self.pid(), self.log_text()));
        assert!(status.success(), "the old encapd exited with {status} after handing over:\n{}", self.log_text());
        (pid, o.elapsed)
    }
}

impl Drop for PackagedNode {
    fn drop(&mut self) {
        let _ = common::process::stop_child(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}----", self.log.display(), self.log_text());
        }
    }
}

fn node_config(dir: &Path, node: Node) -> PathBuf {
    let (subnet, peer_subnet) = match node {
        Node::A => ("100.96.1.0/24", "100.96.2.0/24"),
        Node::B => ("100.96.2.0/24", "100.96.1.0/24"),
    };
    let sub = dir.join(node.sub());
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("peers.toml"), format!("[[peer]]\nsubnet = \"{peer_subnet}\"\npublic_ip = \"{}\"\n", node.other().underlay()))
        .unwrap();
    let config = sub.join("encapd.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\npublic_ip = \"{}\"\nsubnet = \"{subnet}\"\n\n[network]\ncidr = \"100.96.0.0/16\"\n\n\
             [dataplane]\nworkers = 2\n\n[control]\nsource = \"file\"\npeers = \"peers.toml\"\nsubnet_env = \"subnet.env\"\n\n\
             [process]\ncontrol_socket = \"encapd.sock\"\n",
            node.underlay()
        ),
    )
    .unwrap();
    config
}

/// The executable a process runs, as /proc says ("... (deleted)" once the
/// file was replaced).
fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

#[test]
fn package_upgrade_hands_over_without_losing_a_datagram() {
    if !runnable() {
        return;
    }
    let (Some(deb), Some(next)) = (package_from_env("ENCAPD_DEB"), package_from_env("ENCAPD_DEB_UPGRADE")) else { return };
    let _lock = lock();
    let mut installed = Installed::install(&deb);
    let from = package_status();

    let wiring = Wiring::build(false, false);
    wiring.attach_container(Node::A, "100.96.1.1/24", "100.96.1.2/24", None);
    wiring.attach_container(Node::B, "100.96.2.1/24", "100.96.2.3/24", None);
    let dir = TempDir::new(&format!("{}-package-upgrade", wiring.prefix()));
    let mut nodes: Vec<PackagedNode> = [Node::A, Node::B]
        .into_iter()
        .map(|n| PackagedNode::start(wiring.node_ns(n), &node_config(dir.path(), n), &dir.path().join(format!("{}.log", n.sub()))))
        .collect();
    for n in &mut nodes {
        n.wait_ready();
    }

    // 2,000 datagrams/s each way for about 12 s, the upgrade in the middle.
    let rate = 2_000;
    let max = rate * 12;
    let port = 5301;
    let (ip_a, ip_b): (std::net::IpAddr, std::net::IpAddr) = (CTR_A.parse().unwrap(), CTR_B.parse().unwrap());
    let a_to_b = UdpStream::start(&wiring.ctr_a, ip_a, &wiring.ctr_b, (ip_b, port).into(), rate, max);
    let b_to_a = UdpStream::start(&wiring.ctr_b, ip_b, &wiring.ctr_a, (ip_a, port).into(), rate, max);
    assert!(
        a_to_b.wait_flowing(500, Duration::from_secs(10)) && b_to_a.wait_flowing(500, Duration::from_secs(10)),
        "the streams do not flow"
    );

    let dpkg_time = installed.install_over(&next);
    let to = package_status();
    assert_ne!(from, to, "the second package is the same version");
    println!("dpkg -i {} over the running nodes: {dpkg_time:?} ({from} -> {to})", next.display());
    let mut successors = Vec::new();
    for (node, n) in ["A", "B"].iter().zip(&mut nodes) {
        let old = n.pid();
        assert!(exe_of(old).ends_with("(deleted)"), "node {node}'s encapd does not run the replaced file: {}", exe_of(old));
        let (pid, took) = n.upgrade();
        let successor = Orphan(pid);
        assert!(!exited(pid), "the new encapd (pid {pid}) of node {node} is not running");
        assert_eq!(exe_of(pid), INSTALLED_BIN, "node {node}'s new encapd does not run the new file");
        println!("node {node}: encapd upgrade: pid {old} -> {pid} in {took:?}");
        successors.push(successor);
    }

    let a_to_b = a_to_b.complete();
    let b_to_a = b_to_a.complete();
    println!("A->B: {} sent, {} lost; B->A: {} sent, {} lost", a_to_b.sent, a_to_b.lost(), b_to_a.sent, b_to_a.lost());
    assert_eq!(a_to_b.send_errors + b_to_a.send_errors, 0, "send errors");
    assert_eq!((a_to_b.lost(), b_to_a.lost()), (0, 0), "datagrams lost across the package upgrade");
    assert!(a_to_b.sent == max && b_to_a.sent == max, "the streams did not run to the end");

    // The successors stop, then the package goes.
    drop(successors);
    for ns in [&wiring.node_a, &wiring.node_b] {
        let gone = wait_for(Duration::from_secs(10), || (!common::takeover::tun_present(ns)).then_some(()));
        assert!(gone.is_some(), "the TUN stayed in {ns} after its encapd stopped");
    }
    drop(nodes);
    let purge = installed.purge();
    assert!(purge.ok(), "dpkg --purge: {}", purge.text());
    installed.remove_user_we_created();
}
