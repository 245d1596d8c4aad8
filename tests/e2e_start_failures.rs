//! Start-up failures that are the host's, not the configuration's, exit 1
//! (the exit-code contract: 0 success, 1 runtime failure, 2 invalid
//! configuration or usage), with a message that names the setting and the
//! way out, and leave nothing behind. Root only.
//!
//! The case: `kernel_path = "tc"`, a configuration `encapd check` accepts,
//! on a host where the programs cannot be loaded. The test makes that host
//! by starting encapd with `CAP_BPF`, `CAP_SYS_ADMIN` and `CAP_PERFMON`
//! dropped from its bounding set (`setpriv`): it keeps `CAP_NET_ADMIN` for
//! the TUN and its sockets, and loading a TC program is refused
//! (EPERM), as on a host whose service manager withholds `CAP_BPF`.

use encapd_testbed as common;

use std::time::Duration;

use common::netns::{Namespaces, ip};
use common::{TempDir, encapd_bin, netns_pids, ns_exec, require_root, require_tools};

#[test]
fn a_kernel_path_that_cannot_attach_exits_1_and_leaves_nothing() {
    if !require_root() || !require_tools(&["setpriv"]) {
        return;
    }
    let mut namespaces = Namespaces::new();
    let ns = namespaces.add("nA", &[]);
    ip(&ns, &["link", "set", "lo", "up"]);
    ip(&ns, &["link", "add", "ul", "type", "veth", "peer", "name", "ul2"]);
    ip(&ns, &["addr", "add", "198.18.0.1/24", "dev", "ul"]);
    ip(&ns, &["link", "set", "ul", "up"]);
    ip(&ns, &["link", "set", "ul2", "up"]);
    let dir = TempDir::new("start-failures");
    let config = dir.write(
        "encapd.toml",
        "[node]\npublic_ip = \"198.18.0.1\"\nsubnet = \"100.96.1.0/24\"\n[network]\ncidr = \"100.96.0.0/16\"\n\
         [dataplane]\nworkers = 1\nkernel_path = \"tc\"\n[control]\nsubnet_env = \"off\"\n[metrics]\nlisten = \"off\"\n\
         [process]\ncontrol_socket = \"off\"\n",
    );
    dir.write("peers.toml", "[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\nkernel_decap = true\n");
    let config = config.to_str().unwrap();
    let bin = encapd_bin();
    let bin = bin.to_str().unwrap();

    let check = ns_exec(&ns, &[bin, "check", "--config", config], Duration::from_secs(20));
    assert!(check.ok(), "the configuration is valid: {}", check.text());

    let drop_bpf = ["setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon", "--"];
    let run = ns_exec(&ns, &[&drop_bpf[..], &[bin, "run", "--config", config]].concat(), Duration::from_secs(30));
    eprintln!("encapd exited with {:?} after {:?}", run.status.code(), run.elapsed);
    assert_eq!(run.status.code(), Some(1), "a host that cannot run the kernel path is a runtime failure:\n{}", run.text());
    let stderr = &run.stderr;
    assert!(
        stderr.contains("[dataplane] kernel_path = \"tc\"") && stderr.contains("kernel_path = \"off\" runs without it"),
        "the message names the setting and the way out:\n{stderr}"
    );
    assert!(netns_pids(&ns).is_empty(), "no process left in {ns}");
    let links = ns_exec(&ns, &["ip", "-o", "link", "show"], Duration::from_secs(10));
    assert!(!links.stdout.contains("encap0"), "the TUN went with the process:\n{}", links.stdout);
}
