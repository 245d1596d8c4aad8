//! `backend = "wireguard"` as `encapd check` sees it: the configuration
//! contract of issue 31 (`[node] private_key_file`, peers' `public_key`,
//! port 51820, TUN MTU = underlay MTU − 80) and what it refuses, each with
//! the field and the reason: a private key file with another backend, a
//! peer without a public key (and one with it on a udp node), a key file
//! that group or others may read, `kernel_path = "tc"`. No root needed.

use encapd_testbed as common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Output, TempDir, encapd_bin, is_root, run_cmd};
use encapd::wireguard::PrivateKey;

fn check(config: &Path) -> Output {
    let mut cmd = Command::new(encapd_bin());
    cmd.args(["check", "--config", config.to_str().unwrap()]).env("RUST_LOG", "info");
    if is_root() {
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the async-signal-safe unshare syscall (a throw-away network
        // namespace, as tests/cli_check.rs does).
        unsafe {
            cmd.pre_exec(|| if libc::unshare(libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    }
    run_cmd(&mut cmd, Duration::from_secs(20))
}

const KEY_A: [u8; 32] = [7; 32];
const KEY_B: [u8; 32] = [9; 32];

fn node(backend: &str, node_lines: &str, dataplane: &str) -> String {
    format!(
        "[node]\npublic_ip = \"198.18.0.1\"\nsubnet = \"100.96.1.0/24\"\n{node_lines}\n\
         [network]\ncidr = \"100.96.0.0/16\"\nbackend = \"{backend}\"\nunderlay_mtu = 1500\n\n\
         [dataplane]\nworkers = 1\n{dataplane}\n\
         [control]\nsource = \"file\"\npeers = \"peers.toml\"\n"
    )
}

fn peer(lines: &str) -> String {
    format!("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n{lines}")
}

/// A directory with a private key file (mode `mode`) and the two files.
fn setup(config: &str, peers: &str, mode: u32) -> (TempDir, PathBuf) {
    let dir = TempDir::new("wgcfg");
    let key = dir.write("private.key", &format!("{}\n", &*PrivateKey::from_bytes(KEY_A).to_base64()));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    dir.write("peers.toml", peers);
    let path = dir.write("encapd.toml", config);
    (dir, path)
}

fn b_public() -> String {
    PrivateKey::from_bytes(KEY_B).public_key().to_string()
}

#[test]
fn the_contract_is_accepted_with_its_defaults() {
    let peers = peer(&format!("public_key = \"{}\"\n", b_public()));
    let (_dir, path) = setup(&node("wireguard", "private_key_file = \"private.key\"\n", ""), &peers, 0o600);
    let o = check(&path);
    assert!(o.ok(), "{}", o.text());
    let out = o.text();
    assert!(out.contains("backend = \"wireguard\""), "{out}");
    assert!(out.contains("port = 51820"), "the default port is flannel's: {out}");
    assert!(out.contains("TUN MTU 1420"), "underlay 1500 - 80: {out}");
    let own = PrivateKey::from_bytes(KEY_A).public_key().to_string();
    assert!(out.contains(&format!("# wireguard: public key {own}")), "{out}");
    assert!(out.contains("kernel path: off"), "{out}");
    assert!(out.contains("source_ports = \"listen\""), "peers answer the port they heard from: {out}");
    // 0400 is as private as 0600.
    let (_dir, path) = setup(&node("wireguard", "private_key_file = \"private.key\"\n", ""), &peers, 0o400);
    assert!(check(&path).ok());
}

#[test]
fn what_the_contract_refuses_is_named() {
    let with_key = peer(&format!("public_key = \"{}\"\n", b_public()));
    let key_line = "private_key_file = \"private.key\"\n";
    let cases: [(&str, String, String, u32, &str); 7] = [
        (
            "a private key file with the udp backend",
            node("udp", key_line, ""),
            peer(""),
            0o600,
            "[node] private_key_file = \"private.key\": only meaningful with [network] backend = \"wireguard\"",
        ),
        ("wireguard without a private key file", node("wireguard", "", ""), with_key.clone(), 0o600, "[node] private_key_file"),
        (
            "a peer without a public key",
            node("wireguard", key_line, ""),
            peer(""),
            0o600,
            "peer #1: public_key is missing: the wireguard backend needs each peer's public key",
        ),
        ("a public key on a udp node", node("udp", "", ""), with_key.clone(), 0o600, "peer #1: public_key = "),
        (
            "a key file group and others can read",
            node("wireguard", key_line, ""),
            with_key.clone(),
            0o644,
            "mode 0644 lets group or others access the key; run `chmod 600",
        ),
        (
            "the kernel path with wireguard",
            node("wireguard", key_line, "kernel_path = \"tc\"\n"),
            with_key.clone(),
            0o600,
            "[dataplane] kernel_path = \"tc\": the kernel path carries flannel's clear-text udp and vxlan formats only",
        ),
        (
            "source ports by flow with wireguard",
            node("wireguard", key_line, "source_ports = \"flow\"\n"),
            with_key.clone(),
            0o600,
            "[dataplane] source_ports = \"flow\": the wireguard backend sends from its listening port",
        ),
    ];
    for (what, config, peers, mode, want) in cases {
        let (_dir, path) = setup(&config, &peers, mode);
        let o = check(&path);
        assert_eq!(o.status.code(), Some(2), "{what}: exit code 2 expected:\n{}", o.text());
        assert!(o.text().contains(want), "{what}: the error lacks {want:?}:\n{}", o.text());
    }
}
