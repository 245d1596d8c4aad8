//! The other WireGuard implementations as nodes of the testbed: a
//! userspace WireGuard daemon (Debian's `wireguard-go`, or Cloudflare's
//! `boringtun-cli` from crates.io) on a node of the two-node wiring,
//! configured the way flanneld's `wireguard` backend configures its
//! device. Both sides of a pair run it in the benchmark's `wireguard-go`
//! and `boringtun` modes ([`Pair`]); against an encapd node one side runs
//! it ([`start_facing_encapd`]: [`WgDevice::start`], then
//! [`WgDevice::add_peer`] with [`WgPeerSpec::facing_encapd`]; the
//! device's [`WgDevice::public_key`] goes into encapd's peers file).
//!
//! **The layout is flanneld's** (flannel-io/flannel `pkg/backend/wireguard`,
//! `device.go` and `wireguard_network.go`): a device named `flannel-wg`,
//! listening on UDP 51820, MTU = the underlay's MTU − 80 (the 80 bytes of
//! an IPv6 outer header, UDP and WireGuard's data header and tag), the
//! node subnet's network address on it as a /32 (`100.96.1.0/32`), the
//! cluster CIDR routed to it (`100.96.0.0/16 dev flannel-wg scope link`),
//! and per peer node one WireGuard peer: its public key, `endpoint` =
//! the node's public IP and port 51820, `allowed-ips` = the peer node's
//! subnet, no persistent keepalive (flannel's default
//! `PersistentKeepaliveInterval` is 0) and no preshared key unless one is
//! given (flannel's optional `PSK`). The two-node wiring is dual-stack,
//! so IPv6 is laid out as flannel's `Mode: auto` does it: the same device
//! carries the IPv6 subnet too (its network address as a /128, the IPv6
//! cluster CIDR routed to it, the peer's IPv6 subnet among its allowed
//! IPs), where flannel's default `separate` mode would add a second
//! device `flannel-wg-v6` on port 51821; one device keeps both families
//! behind one handshake, which is what encapd's `wireguard` backend does.
//!
//! **Keys** come from `wg genkey` and `wg pubkey` (wireguard-tools); the
//! private key is written with mode 0600 into the caller's directory (the
//! run's temporary directory) and handed to the daemon by path
//! (`wg set ... private-key FILE`), never on a command line.
//!
//! **Each daemon gets a private `/run/wireguard`.** Both implementations
//! serve their configuration interface (UAPI) on
//! `/var/run/wireguard/<device>.sock`, a path in the mount namespace,
//! which `ip netns exec` does not separate: two nodes' `flannel-wg` (or
//! two test processes) would fight over one socket. So the daemon starts
//! under `unshare --mount` with a tmpfs on `/run/wireguard` that only its
//! mount namespace sees, and `wg` reaches it with `nsenter --target PID
//! --mount --net`. Nothing is left in the host's `/run/wireguard` (only
//! the empty directory, created as wireguard-tools would create it).
//!
//! **Processes**: `unshare`, `sh`, `ip netns exec` and `env` each exec the
//! next, so the pid spawned is the daemon's own; it is stopped by that pid
//! (SIGTERM, SIGKILL after 5 s: [`crate::process::stop_child`]) by
//! [`WgDevice::stop`] or, on any other exit path, when the [`WgDevice`]
//! drops. Closing its TUN removes `flannel-wg` with its addresses and
//! routes; the namespace going away would too.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::cmd::{Output, run, run_cmd, run_cmd_with_input, wait_for};
use crate::kernel_paths::{UNDERLAY_MTU, subnets};
use crate::process::{running, stop_child};
use crate::wiring::Node;

/// The device name flanneld gives its WireGuard device.
pub const DEVICE: &str = "flannel-wg";
/// flanneld's default `ListenPort` (and WireGuard's customary port).
pub const WG_PORT: u16 = 51820;
/// What flanneld subtracts from the underlay MTU for the device's MTU.
pub const OVERHEAD: u32 = 80;
/// The two-node wiring's cluster CIDRs (as encapd's `[network] cidr`,
/// `cidr6` in [`crate::bed`]).
pub const CLUSTER_CIDR: &str = "100.96.0.0/16";
pub const CLUSTER_CIDR6: &str = "fd00:96::/32";

/// Environment variable naming the `boringtun-cli` binary (else PATH,
/// else where scripts/lib.sh's `ed_need_boringtun` installs it).
pub const BORINGTUN_ENV: &str = "ENCAPD_BORINGTUN";
/// How to install `boringtun-cli` (the error message of a missing one).
pub const BORINGTUN_INSTALL: &str = "bash -c '. scripts/lib.sh; ed_need_boringtun' (cargo install boringtun-cli --locked into \
     ~/.cache/encapd/tools; scripts/test.sh does it), or point ENCAPD_BORINGTUN at a binary";

/// How long a daemon may take from spawn to its device and UAPI socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `wg` or `ip` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// A userspace WireGuard implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WgImpl {
    /// wireguard-go, WireGuard's reference userspace implementation (Go;
    /// Debian package `wireguard-go`).
    WireguardGo,
    /// Cloudflare's boringtun (Rust; crate `boringtun-cli`).
    Boringtun,
}

impl WgImpl {
    pub const ALL: [WgImpl; 2] = [WgImpl::WireguardGo, WgImpl::Boringtun];

    /// The name reports and modes use.
    pub fn name(self) -> &'static str {
        match self {
            WgImpl::WireguardGo => "wireguard-go",
            WgImpl::Boringtun => "boringtun",
        }
    }

    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            WgImpl::WireguardGo => "wireguard-go",
            WgImpl::Boringtun => "boringtun-cli",
        }
    }

    /// Where the program is: for boringtun `$ENCAPD_BORINGTUN`, PATH, or
    /// the tools directory scripts/lib.sh installs into; for wireguard-go
    /// PATH. An error names how to install it.
    pub fn locate(self) -> Result<PathBuf, String> {
        match self {
            WgImpl::WireguardGo => find_in_path("wireguard-go")
                .ok_or_else(|| "wireguard-go not in PATH (Debian package wireguard-go: scripts/lib.sh @test)".to_owned()),
            WgImpl::Boringtun => {
                if let Some(p) = std::env::var_os(BORINGTUN_ENV).filter(|v| !v.is_empty()) {
                    let p = PathBuf::from(p);
                    return if p.is_file() { Ok(p) } else { Err(format!("{BORINGTUN_ENV}={} is not a file", p.display())) };
                }
                find_in_path("boringtun-cli")
                    .or_else(|| Some(tools_dir().join("bin/boringtun-cli")).filter(|p| p.is_file()))
                    .ok_or_else(|| format!("boringtun-cli not found; install it: {BORINGTUN_INSTALL}"))
            }
        }
    }

    /// The daemon's arguments after the program: foreground, keep root
    /// (it runs in a namespace of ours and must read the key file), on
    /// device `dev`.
    fn args(self, dev: &str) -> Vec<String> {
        let v: &[&str] = match self {
            // `-f` and WG_PROCESS_FOREGROUND=1 both keep it in the
            // foreground; the variable also silences its warning that
            // the kernel module should be preferred.
            WgImpl::WireguardGo => &["-f"],
            // Its other defaults are the operator's: 4 worker threads,
            // connected UDP sockets per peer, multi-queue TUN.
            WgImpl::Boringtun => &["--foreground", "--disable-drop-privileges", "--verbosity", "info"],
        };
        v.iter().map(|s| (*s).to_owned()).chain([dev.to_owned()]).collect()
    }

    /// Environment for the daemon.
    fn env(self) -> &'static [&'static str] {
        match self {
            WgImpl::WireguardGo => &["WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=verbose"],
            WgImpl::Boringtun => &[],
        }
    }
}

impl std::fmt::Display for WgImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// True when a test may run `imp` here: root, the namespace tools, `wg`,
/// and the implementation's program. Otherwise prints "skipped: ..." and
/// returns false, or panics when `ENCAPD_REQUIRE_ROOT_TESTS=1`.
pub fn require(imp: WgImpl) -> bool {
    if !crate::env::require_root() || !crate::env::require_tools(&["wg", "unshare", "nsenter"]) {
        return false;
    }
    match imp.locate() {
        Ok(_) => true,
        Err(why) => crate::env::skip_or_fail(&why),
    }
}

/// `$ENCAPD_TOOLS_DIR`, else `~/.cache/encapd/tools`: where
/// scripts/lib.sh installs crates.io tools (`cargo install --root`).
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ENCAPD_TOOLS_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/encapd/tools")
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// A WireGuard key pair: the private key in a file (mode 0600), the
/// public key as `wg pubkey` prints it (base64).
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private_key_file: PathBuf,
    pub public_key: String,
}

/// A new key pair from `wg genkey` / `wg pubkey`, the private key written
/// to `dir/<name>.key` with mode 0600 (created, never overwritten).
pub fn generate_key_pair(dir: &Path, name: &str) -> Result<KeyPair, String> {
    let private = run("wg", &["genkey"]);
    if !private.ok() {
        return Err(format!("wg genkey: {}", private.text()));
    }
    let path = dir.join(format!("{name}.key"));
    write_private(&path, private.stdout.as_bytes())?;
    let public = run_cmd_with_input(Command::new("wg").arg("pubkey"), private.stdout.as_bytes(), CMD_TIMEOUT);
    if !public.ok() {
        return Err(format!("wg pubkey: {}", public.text()));
    }
    Ok(KeyPair { private_key_file: path, public_key: public.stdout.trim().to_owned() })
}

/// Writes secret `bytes` to a new file at `path`, mode 0600 from creation.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What flanneld puts on its node's device: the node's subnets (their
/// network addresses go on the device), the cluster CIDRs (routed to the
/// device) and the underlay MTU (the device's is 80 less).
#[derive(Debug, Clone)]
pub struct Layout {
    pub subnet: String,
    pub subnet6: Option<String>,
    pub cidr: String,
    pub cidr6: Option<String>,
    pub underlay_mtu: u32,
}

impl Layout {
    /// `node` of the two-node wiring, dual-stack.
    pub fn of(node: Node) -> Layout {
        let (subnet, subnet6) = subnets(node);
        Layout {
            subnet: subnet.to_owned(),
            subnet6: Some(subnet6.to_owned()),
            cidr: CLUSTER_CIDR.to_owned(),
            cidr6: Some(CLUSTER_CIDR6.to_owned()),
            underlay_mtu: UNDERLAY_MTU,
        }
    }

    /// The device's MTU, as flanneld sets it.
    pub fn mtu(&self) -> u32 {
        self.underlay_mtu - OVERHEAD
    }
}

fn network_address(prefix: &str) -> &str {
    prefix.split('/').next().unwrap_or(prefix)
}

/// One WireGuard peer as flanneld adds it for a peer node's lease.
#[derive(Debug, Clone)]
pub struct WgPeerSpec {
    pub public_key: String,
    /// The peer node's public (underlay) IP.
    pub endpoint_ip: String,
    pub port: u16,
    /// The peer node's subnets.
    pub allowed_ips: Vec<String>,
    /// flannel's `PSK`, when the cluster has one.
    pub preshared_key_file: Option<PathBuf>,
    /// Seconds; flannel's default is none.
    pub persistent_keepalive: Option<u32>,
}

impl WgPeerSpec {
    /// `node` of the two-node wiring with public key `public_key`.
    pub fn for_node(node: Node, public_key: &str) -> WgPeerSpec {
        let (subnet, subnet6) = subnets(node);
        WgPeerSpec::facing_encapd(public_key, node.underlay(), subnet, Some(subnet6))
    }

    /// An encapd node with `backend = "wireguard"`: its public key (what
    /// `encapd pubkey` prints for its `private_key_file`), its
    /// `public_ip`, its `subnet` (and `subnet6`), on port 51820.
    pub fn facing_encapd(public_key: &str, public_ip: &str, subnet: &str, subnet6: Option<&str>) -> WgPeerSpec {
        WgPeerSpec {
            public_key: public_key.to_owned(),
            endpoint_ip: public_ip.to_owned(),
            port: WG_PORT,
            allowed_ips: std::iter::once(subnet).chain(subnet6).map(str::to_owned).collect(),
            preshared_key_file: None,
            persistent_keepalive: None,
        }
    }

    /// The `wg set DEVICE ...` arguments that add it.
    fn wg_set_args(&self) -> Vec<String> {
        let mut a = vec![
            "set".into(),
            DEVICE.into(),
            "peer".into(),
            self.public_key.clone(),
            "endpoint".into(),
            format!("{}:{}", self.endpoint_ip, self.port),
            "allowed-ips".into(),
            self.allowed_ips.join(","),
        ];
        if let Some(psk) = &self.preshared_key_file {
            a.extend(["preshared-key".into(), psk.to_string_lossy().into_owned()]);
        }
        if let Some(k) = self.persistent_keepalive {
            a.extend(["persistent-keepalive".into(), k.to_string()]);
        }
        a
    }
}

/// A userspace WireGuard daemon serving `flannel-wg` in a node namespace.
pub struct WgDevice {
    imp: WgImpl,
    ns: String,
    child: Option<Child>,
    pid: i32,
    keys: KeyPair,
    log: PathBuf,
}

/// How a [`WgDevice`] went.
#[derive(Debug)]
pub struct Stopped {
    /// `Ok` when SIGTERM was enough, `Err` when it had to be killed.
    pub status: Result<ExitStatus, ExitStatus>,
    /// Whether `flannel-wg` was gone within 5 s of the exit.
    pub device_gone: bool,
    pub log: String,
}

impl WgDevice {
    /// Starts `imp` in namespace `ns` with a new key pair (its files in
    /// `dir`, named after `tag`; the log is `dir/<tag>.log`), and lays out
    /// `flannel-wg` as flanneld does for `layout`: private key, port
    /// 51820, MTU, the subnets' network addresses, the cluster routes. No
    /// peers yet ([`WgDevice::add_peer`]). On an error nothing is left
    /// running.
    pub fn start(imp: WgImpl, ns: &str, layout: &Layout, dir: &Path, tag: &str) -> Result<WgDevice, String> {
        let bin = imp.locate()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let keys = generate_key_pair(dir, tag)?;
        let log = dir.join(format!("{tag}.log"));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        // A tmpfs on /run/wireguard seen by this daemon's mount namespace
        // alone (see the module docs); each program execs the next.
        let script = "mkdir -p /run/wireguard && mount -t tmpfs -o mode=0700,size=1m encapd-wg /run/wireguard && exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", "ip", "netns", "exec", ns, "env"])
            .args(imp.env())
            .arg(&bin)
            .args(imp.args(DEVICE))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let pid = child.id() as i32;
        let mut dev = WgDevice { imp, ns: ns.to_owned(), child: Some(child), pid, keys, log };
        dev.wait_ready()?;
        dev.lay_out(layout)?;
        Ok(dev)
    }

    /// Waits until the daemon answers `wg show` and its device exists.
    fn wait_ready(&mut self) -> Result<(), String> {
        let ready = wait_for(READY_TIMEOUT, || {
            let child = self.child.as_mut()?;
            if !running(child) {
                return Some(false);
            }
            let up = run("ip", &["-n", &self.ns, "link", "show", DEVICE]).ok() && self.wg(&["show", DEVICE]).ok();
            up.then_some(true)
        });
        match ready {
            Some(true) => Ok(()),
            Some(false) => Err(format!("{} in {} exited during start-up:\n{}", self.imp, self.ns, tail(&self.log(), 20))),
            None => Err(format!(
                "{} in {}: no {DEVICE} answering `wg show` within {READY_TIMEOUT:?}:\n{}",
                self.imp,
                self.ns,
                tail(&self.log(), 20)
            )),
        }
    }

    fn lay_out(&self, layout: &Layout) -> Result<(), String> {
        let key = self.keys.private_key_file.to_string_lossy().into_owned();
        let port = WG_PORT.to_string();
        let o = self.wg(&["set", DEVICE, "private-key", &key, "listen-port", &port]);
        if !o.ok() {
            return Err(format!("wg set {DEVICE} private-key/listen-port in {}: {}", self.ns, o.text()));
        }
        let mut lines = vec![
            format!("link set {DEVICE} mtu {}", layout.mtu()),
            format!("addr add {}/32 dev {DEVICE}", network_address(&layout.subnet)),
        ];
        if let Some(s6) = &layout.subnet6 {
            lines.push(format!("addr add {}/128 dev {DEVICE} nodad", network_address(s6)));
        }
        lines.push(format!("link set {DEVICE} up"));
        lines.push(format!("route replace {} dev {DEVICE} scope link", layout.cidr));
        if let Some(c6) = &layout.cidr6 {
            lines.push(format!("route replace {c6} dev {DEVICE}"));
        }
        let input = lines.join("\n") + "\n";
        let o = run_cmd_with_input(Command::new("ip").args(["-n", &self.ns, "-batch", "-"]), input.as_bytes(), CMD_TIMEOUT);
        if !o.ok() {
            return Err(format!("laying out {DEVICE} in {}: {}\ncommands:\n{input}", self.ns, o.text()));
        }
        Ok(())
    }

    /// Adds (or updates) a peer as flanneld adds a peer node's lease.
    pub fn add_peer(&self, peer: &WgPeerSpec) -> Result<(), String> {
        let args = peer.wg_set_args();
        let o = self.wg(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if o.ok() { Ok(()) } else { Err(format!("wg {} in {}: {}", args.join(" "), self.ns, o.text())) }
    }

    /// Runs `wg ARGS` against this daemon (in its mount and network
    /// namespaces, where its UAPI socket is).
    pub fn wg(&self, args: &[&str]) -> Output {
        let pid = self.pid.to_string();
        run_cmd(Command::new("nsenter").args(["--target", &pid, "--mount", "--net", "--", "wg"]).args(args), CMD_TIMEOUT)
    }

    /// `wg show flannel-wg` (peers, handshakes, transfer counts).
    pub fn show(&self) -> String {
        self.wg(&["show", DEVICE]).text()
    }

    /// This side's public key, for the other side's peer entry (an
    /// encapd's peers file: `public_key`).
    pub fn public_key(&self) -> &str {
        &self.keys.public_key
    }

    pub fn keys(&self) -> &KeyPair {
        &self.keys
    }

    pub fn implementation(&self) -> WgImpl {
        self.imp
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The daemon's pid (a child of this process until stopped).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(running)
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 5 s) and waits up to 5 s
    /// for its device to go.
    pub fn stop(mut self) -> Stopped {
        self.stop_inner().expect("a running WgDevice has its child")
    }

    fn stop_inner(&mut self) -> Option<Stopped> {
        let mut child = self.child.take()?;
        let status = stop_child(&mut child, Duration::from_secs(5));
        let device_gone =
            wait_for(Duration::from_secs(5), || (!run("ip", &["-n", &self.ns, "link", "show", DEVICE]).ok()).then_some(())).is_some();
        Some(Stopped { status, device_gone, log: self.log() })
    }
}

impl Drop for WgDevice {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// One side of an interop pair with an encapd node: `imp` started in
/// `ns` with `layout` (keys and log in `dir`, named after `tag`) and
/// given `encapd` as its peer (see [`WgPeerSpec::facing_encapd`]). Its
/// [`WgDevice::public_key`] is what encapd's peers file needs as the
/// peer's `public_key`; the handshake starts with the first packet either
/// side sends, so encapd may start before or after this returns.
pub fn start_facing_encapd(imp: WgImpl, ns: &str, layout: &Layout, encapd: &WgPeerSpec, dir: &Path, tag: &str) -> Result<WgDevice, String> {
    let dev = WgDevice::start(imp, ns, layout, dir, tag)?;
    dev.add_peer(encapd)?;
    Ok(dev)
}

/// Both nodes of the two-node wiring running one implementation, each
/// the other's peer: what the `wireguard-go` and `boringtun` modes set up.
pub struct Pair {
    pub a: WgDevice,
    pub b: WgDevice,
}

impl Pair {
    /// `imp` on nodeA (namespace `ns_a`) and nodeB (`ns_b`), keys and
    /// logs in `dir` (`wg-a.*`, `wg-b.*`). Returns once both are
    /// configured (not yet handshaken: the first packet starts it).
    pub fn start(imp: WgImpl, ns_a: &str, ns_b: &str, dir: &Path) -> Result<Pair, String> {
        let a = WgDevice::start(imp, ns_a, &Layout::of(Node::A), dir, "wg-a")?;
        let b = WgDevice::start(imp, ns_b, &Layout::of(Node::B), dir, "wg-b")?;
        a.add_peer(&WgPeerSpec::for_node(Node::B, b.public_key()))?;
        b.add_peer(&WgPeerSpec::for_node(Node::A, a.public_key()))?;
        Ok(Pair { a, b })
    }

    /// Stops both (nodeA's first).
    pub fn stop(self) -> [(Node, Stopped); 2] {
        [(Node::A, self.a.stop()), (Node::B, self.b.stop())]
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::TempDir;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn peers_are_added_as_flanneld_adds_them() {
        let spec = WgPeerSpec::for_node(Node::B, "KEY=");
        assert_eq!(
            spec.wg_set_args(),
            ["set", DEVICE, "peer", "KEY=", "endpoint", "198.18.0.2:51820", "allowed-ips", "100.96.2.0/24,fd00:96:2::/64"]
        );
        let mut encapd = WgPeerSpec::facing_encapd("K2=", "198.18.0.1", "100.96.1.0/24", None);
        encapd.persistent_keepalive = Some(25);
        encapd.preshared_key_file = Some("/tmp/psk".into());
        assert_eq!(
            encapd.wg_set_args()[5..],
            ["198.18.0.1:51820", "allowed-ips", "100.96.1.0/24", "preshared-key", "/tmp/psk", "persistent-keepalive", "25"]
        );
        assert_eq!(Layout::of(Node::A).mtu(), 1420, "flannel: underlay MTU - 80");
    }

    #[test]
    fn keys_come_from_wg_and_stay_private() {
        if !crate::env::require_tools(&["wg"]) {
            return;
        }
        let dir = TempDir::new("wg-keys");
        let k = generate_key_pair(dir.path(), "n").unwrap();
        assert_eq!(k.public_key.len(), 44, "base64 of 32 bytes: {}", k.public_key);
        let mode = std::fs::metadata(&k.private_key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(generate_key_pair(dir.path(), "n").is_err(), "an existing key file is never overwritten");
        let again = run_cmd_with_input(Command::new("wg").arg("pubkey"), &std::fs::read(&k.private_key_file).unwrap(), CMD_TIMEOUT);
        assert_eq!(again.stdout.trim(), k.public_key);
    }
}
