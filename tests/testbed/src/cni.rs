//! Pods wired as a Kubernetes node wires them: flannel's CNI plugin reads
//! `subnet.env` and delegates to the standard `bridge` plugin with
//! `host-local` IPAM (Debian's containernetworking-plugins). [`delegate`]
//! builds the configuration flannel's plugin builds (bridge `cni0`, gateway
//! on it, `ipMasq` the opposite of FLANNEL_IPMASQ, MTU from FLANNEL_MTU, the
//! node's subnets as IPAM ranges, routes to FLANNEL_NETWORK and
//! FLANNEL_IPV6_NETWORK, kube-flannel's `hairpinMode` and
//! `isDefaultGateway`); [`add`] and [`del`] run the plugin through the CNI
//! protocol (`CNI_*` in the environment, the configuration on stdin) in the
//! node's namespace. host-local keeps its state in the test's directory
//! (`ipam.dataDir`), never the host's /var/lib/cni.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmd::run_cmd_with_input;

/// Where Debian's containernetworking-plugins installs the plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// A pod's addresses, as the plugin's result gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddrs {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
}

/// `KEY=VALUE` lines of a subnet.env.
fn subnet_env(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// `100.96.1.1/24` -> `100.96.1.0/24` (host-local wants the network).
fn network_of(cidr: &str) -> String {
    let (addr, len) = cidr.split_once('/').unwrap_or_else(|| panic!("{cidr:?} is not ADDRESS/LENGTH"));
    let len: u32 = len.parse().unwrap();
    match addr.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => format!("{}/{len}", Ipv4Addr::from(u32::from(a) & u32::MAX.checked_shl(32 - len).unwrap_or(0))),
        std::net::IpAddr::V6(a) => format!("{}/{len}", Ipv6Addr::from(u128::from(a) & u128::MAX.checked_shl(128 - len).unwrap_or(0))),
    }
}

/// The bridge delegate flannel's CNI plugin builds from `subnet.env`.
pub fn delegate(subnet_env_path: &Path, data_dir: &Path) -> String {
    let env = subnet_env(subnet_env_path);
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let must = |k: &str| get(k).unwrap_or_else(|| panic!("{}: no {k}", subnet_env_path.display()));
    let mut ranges = vec![serde_json::json!([{ "subnet": network_of(&must("FLANNEL_SUBNET")) }])];
    let mut routes = vec![serde_json::json!({ "dst": must("FLANNEL_NETWORK") })];
    if let (Some(sub6), Some(net6)) = (get("FLANNEL_IPV6_SUBNET"), get("FLANNEL_IPV6_NETWORK")) {
        ranges.push(serde_json::json!([{ "subnet": network_of(&sub6) }]));
        routes.push(serde_json::json!({ "dst": net6 }));
    }
    serde_json::json!({
        "cniVersion": "0.3.1",
        "name": "cbr0",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": get("FLANNEL_IPMASQ").as_deref() != Some("true"),
        "mtu": must("FLANNEL_MTU").parse::<u32>().unwrap(),
        "ipam": { "type": "host-local", "ranges": ranges, "routes": routes, "dataDir": data_dir },
    })
    .to_string()
}

fn plugin(node_ns: &str, pod_ns: &str, command: &str, config: &str) -> crate::cmd::Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node_ns])
        .arg(format!("{CNI_PATH}/bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod_ns)
        .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH);
    run_cmd_with_input(&mut cmd, config.as_bytes(), Duration::from_secs(30))
}

/// CNI ADD: attaches the (existing) namespace `pod_ns` to `node_ns`.
pub fn add(node_ns: &str, pod_ns: &str, config: &str) -> PodAddrs {
    let o = plugin(node_ns, pod_ns, "ADD", config);
    assert!(o.ok(), "CNI ADD of {pod_ns} on {node_ns} failed: {}\nconfig: {config}", o.text());
    let result: serde_json::Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("CNI result is not JSON ({e}): {}", o.stdout));
    let addrs: Vec<String> = result["ips"]
        .as_array()
        .map(|ips| ips.iter().filter_map(|i| i["address"].as_str()).map(|a| a.split('/').next().unwrap_or("").to_owned()).collect())
        .unwrap_or_default();
    let ip = addrs.iter().find_map(|a| a.parse::<Ipv4Addr>().ok()).unwrap_or_else(|| panic!("no IPv4 address in {}", o.stdout));
    PodAddrs { ip, ip6: addrs.iter().find_map(|a| a.parse::<Ipv6Addr>().ok()) }
}

/// CNI DEL: detaches `pod_ns` from `node_ns` (the namespace stays).
pub fn del(node_ns: &str, pod_ns: &str, config: &str) {
    let o = plugin(node_ns, pod_ns, "DEL", config);
    assert!(o.ok(), "CNI DEL of {pod_ns} on {node_ns} failed: {}", o.text());
}
