use super::*;
use crate::sys::sched::WorkerSched;

const GOOD: &str = r#"
[node]
public_ip = "198.18.0.1"
subnet = "100.96.1.0/24"
[network]
cidr = "100.96.0.0/16"
[dataplane]
workers = 2
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/encapd/encapd.toml"))
}

#[test]
fn defaults_are_filled_in() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.port, 8285);
    assert_eq!(c.backend, Backend::Udp);
    assert_eq!(c.io, IoEngine::Uring);
    assert_eq!(c.tun, "encap0");
    assert_eq!(c.workers, 2);
    assert_eq!(c.peers_path(), Some(Path::new("/etc/encapd/peers.toml")));
    assert_eq!(c.tun_mtu(1500), 1472);
    // The printed effective config parses back to the same values.
    let again = parse(&c.to_string()).unwrap();
    assert_eq!((again.subnet, again.cidr, again.workers, again.port), (c.subnet, c.cidr, c.workers, c.port));
}

#[test]
fn an_empty_cpu_list_means_no_pinning() {
    let c = parse(&GOOD.replace("workers = 2", "workers = 2\ncpus = []")).unwrap();
    assert_eq!(c.cpus, Some(vec![]));
    assert_eq!(parse(&c.to_string()).unwrap().cpus, Some(vec![]), "{c}");
}

#[test]
fn worker_sched_defaults_to_normal_and_round_trips() {
    assert_eq!(parse(GOOD).unwrap().worker_sched, WorkerSched::Normal);
    for sched in WorkerSched::ALL {
        let c = parse(&GOOD.replace("workers = 2", &format!("workers = 2\nsched = \"{}\"", sched.name()))).unwrap();
        assert_eq!(c.worker_sched, sched);
        assert_eq!(parse(&c.to_string()).unwrap().worker_sched, sched, "{c}");
    }
}

#[test]
fn ingress_checksum_defaults_to_verify_and_round_trips() {
    assert_eq!(parse(GOOD).unwrap().ingress_checksum, IngressChecksum::Verify);
    let trusting = parse(&GOOD.replace("workers = 2", "workers = 2\ningress_checksum = \"trust-outer\"")).unwrap();
    assert_eq!(trusting.ingress_checksum, IngressChecksum::TrustOuter);
    assert_eq!(parse(&trusting.to_string()).unwrap().ingress_checksum, IngressChecksum::TrustOuter, "{trusting}");
}

#[test]
fn kernel_path_defaults_to_off_round_trips_and_refuses_what_it_cannot_carry() {
    assert_eq!(parse(GOOD).unwrap().kernel_path, KernelPathMode::Off);
    let on = parse(&GOOD.replace("workers = 2", "workers = 2\nkernel_path = \"tc\"")).unwrap();
    assert_eq!(on.kernel_path, KernelPathMode::Tc);
    assert_eq!(parse(&on.to_string()).unwrap().kernel_path, KernelPathMode::Tc, "{on}");
    let vxlan = GOOD.replace("workers = 2", "workers = 2\nkernel_path = \"tc\"").replace("[network]", "[network]\nbackend = \"vxlan\"");
    assert_eq!(parse(&vxlan).unwrap().kernel_path, KernelPathMode::Tc, "the vxlan backend has a kernel path too");
    let refused = [
        (GOOD.replace("workers = 2", "workers = 2\nkernel_path = \"xdp\""), "expected \"off\", \"tc\" or \"auto\""),
        (GOOD.replace("workers = 2", "workers = 2\nkernel_path = \"tc\"\ningress_checksum = \"trust-outer\""), "no outer UDP checksum"),
    ];
    for (text, want) in &refused {
        let err = parse(text).expect_err(want).to_string();
        assert!(err.contains("[dataplane] kernel_path = "), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn source_ports_default_to_flow_round_trip_and_stay_listen_for_wireguard() {
    assert_eq!(parse(GOOD).unwrap().source_ports, SourcePorts::Flow);
    for mode in [SourcePorts::Flow, SourcePorts::Listen] {
        let text = GOOD.replace("workers = 2", &format!("workers = 2\nsource_ports = \"{}\"", mode.name()));
        let c = parse(&text).unwrap();
        assert_eq!(c.source_ports, mode);
        assert_eq!(parse(&c.to_string()).unwrap().source_ports, mode, "{c}");
    }
    let err = parse(&GOOD.replace("workers = 2", "workers = 2\nsource_ports = \"random\"")).expect_err("an unknown name").to_string();
    assert!(err.contains("[dataplane] source_ports = ") && err.contains("expected \"flow\" or \"listen\""), "{err}");
}

#[test]
fn xdp_decap_defaults_to_auto_round_trips_and_refuses_other_names() {
    assert_eq!(parse(GOOD).unwrap().xdp_decap, XdpDecapMode::Auto);
    for mode in [XdpDecapMode::On, XdpDecapMode::Off, XdpDecapMode::Auto] {
        let text = GOOD.replace("workers = 2", &format!("workers = 2\nkernel_path = \"tc\"\nxdp_decap = \"{}\"", mode.name()));
        let c = parse(&text).unwrap();
        assert_eq!(c.xdp_decap, mode);
        assert_eq!(parse(&c.to_string()).unwrap().xdp_decap, mode, "{c}");
    }
    let err = parse(&GOOD.replace("workers = 2", "workers = 2\nxdp_decap = \"native\"")).expect_err("an unknown name").to_string();
    assert!(err.contains("[dataplane] xdp_decap = ") && err.contains("expected \"auto\", \"on\" or \"off\""), "{err}");
}

/// Fuzzer finding: a peers path with a quote must print as valid TOML.
#[test]
fn effective_config_escapes_strings() {
    let text = GOOD.to_owned() + "[control]\npeers = \"we\\\"ird\\\\path.toml\"\n[process]\nuser = \"a\\\"b\"\n";
    let c = parse(&text).unwrap();
    let again = parse(&c.to_string()).unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{c}"));
    assert_eq!(again.peers_path(), c.peers_path());
    assert_eq!(again.user, c.user);
}

/// Each bad config must be rejected with a message naming the field and value.
#[test]
fn rejects_bad_configs_naming_the_field() {
    let replace = |from: &str, to: &str| GOOD.replace(from, to);
    let cases: Vec<(String, &str)> = vec![
        (replace("100.96.1.0/24", "100.96.1.0/33"), "[node] subnet = \"100.96.1.0/33\""),
        (replace("100.96.1.0/24", "100.96.1.7/24"), "host bits set"),
        (replace("100.96.1.0/24", "100.97.1.0/24"), "[node] subnet = 100.97.1.0/24: must lie inside"),
        (replace("100.96.0.0/16", "banana"), "[network] cidr = \"banana\""),
        (replace("198.18.0.1", "198.18.0.300"), "[node] public_ip = \"198.18.0.300\""),
        (replace("198.18.0.1", "0.0.0.0"), "[node] public_ip = 0.0.0.0"),
        (replace("workers = 2", "workers = 0"), "[dataplane] workers = 0: must be between 1 and 256"),
        (replace("workers = 2", "workers = 2\nio = \"dpdk\""), "[dataplane] io = \"dpdk\": unknown I/O engine"),
        (replace("workers = 2", "workers = 2\ncpus = [0]"), "[dataplane] cpus = [0]: must list one CPU per worker"),
        (replace("workers = 2", "workers = 2\ntun = \"a-very-long-tun-name\""), "[dataplane] tun"),
        (replace("[network]", "[network]\nport = 70000"), "[network] port = 70000"),
        (replace("[network]", "[network]\nbackend = \"gre\""), "[network] backend = \"gre\""),
        (replace("[network]", "[network]\nunderlay_mtu = 100"), "[network] underlay_mtu = 100"),
        (replace("[network]", "[network]\ncolour = 1"), "unknown field `colour`"),
        (GOOD.to_owned() + "[control]\nsource = \"zookeeper\"\n", "[control] source = \"zookeeper\""),
        (replace("[network]", "[network]\ncidr6 = \"fd00:96::/32\""), "[network] cidr6 = fd00:96::/32: needs [node] subnet6"),
        (
            replace("subnet = \"100.96.1.0/24\"", "subnet = \"100.96.1.0/24\"\nsubnet6 = \"fd00:97::/64\"")
                .replace("[network]", "[network]\ncidr6 = \"fd00:96::/32\""),
            "[node] subnet6 = fd00:97::/64",
        ),
        (replace("[node]", "[nodes]"), "unknown field `nodes`"),
        ("[node]\npublic_ip = \"198.18.0.1\"\n".to_owned(), "missing field"),
        (replace("workers = 2", "workers = 2\nbatch = 1000"), "[dataplane] batch = 1000"),
        (replace("workers = 2", "workers = 2\noffload = \"on\""), "[dataplane] offload = \"on\""),
        (replace("workers = 2", "workers = 2\ningress_checksum = \"skip\""), "[dataplane] ingress_checksum = \"skip\""),
        (replace("workers = 2", "workers = 2\nsched = \"rt\""), "[dataplane] sched = \"rt\": unknown scheduling class"),
    ];
    for (text, want) in &cases {
        let err = parse(text).expect_err(want).to_string();
        assert!(err.starts_with("/etc/encapd/encapd.toml: "), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

const ETCD: &str = r#"
[node]
public_ip = "198.18.0.1"
[dataplane]
workers = 2
[control]
source = "etcd"
endpoints = ["http://198.18.0.10:2379", "http://198.18.0.11:2379"]
"#;

#[test]
fn etcd_source_makes_subnet_cidr_and_port_optional() {
    let c = parse(ETCD).unwrap();
    let e = c.etcd().unwrap();
    assert_eq!(e.endpoints.len(), 2);
    assert_eq!(e.prefix, "/coreos.com/network");
    assert_eq!((e.given_subnet, e.given_cidr, e.given_port), (None, None, None));
    assert_eq!(e.state_dir, Path::new("/etc/encapd"));
    assert_eq!(c.subnet_env.as_deref(), Some(Path::new("/run/flannel/subnet.env")));
    assert_eq!(e.renew_margin, std::time::Duration::from_secs(3600));
    assert!(!c.is_resolved() && c.peers_path().is_none());
    let text = c.to_string();
    assert!(text.contains("# subnet: allocated from etcd"), "{text}");
    let c =
        parse(&ETCD.replace("[dataplane]", "subnet = \"100.96.3.0/24\"\n[network]\ncidr = \"100.96.0.0/16\"\nport = 7890\n[dataplane]"))
            .unwrap();
    let e = c.etcd().unwrap();
    assert_eq!(e.given_subnet, Some("100.96.3.0/24".parse().unwrap()));
    assert_eq!(e.given_port, Some(7890));
    assert_eq!(c.subnet, "100.96.3.0/24".parse().unwrap());
    // The printed effective config parses back.
    assert_eq!(parse(&c.to_string()).unwrap().etcd().unwrap().endpoints, e.endpoints);
}

/// With etcd, `subnet6` and `cidr6` are optional and independent: etcd's
/// network says whether there is IPv6, and allocates the subnet.
#[test]
fn etcd_source_takes_ipv6_subnets_from_etcd_or_the_file() {
    let c = parse(ETCD).unwrap();
    let e = c.etcd().unwrap();
    assert_eq!((c.subnet6, c.cidr6, e.given_subnet6, e.given_cidr6), (None, None, None, None));
    let text = c.to_string();
    assert!(text.contains("# subnet6: allocated from etcd") && text.contains("# cidr6: etcd's IPv6Network"), "{text}");
    let c = parse(&ETCD.replace("[dataplane]", "subnet6 = \"fd00:96:3::/64\"\n[dataplane]")).unwrap();
    assert_eq!(c.etcd().unwrap().given_subnet6, Some("fd00:96:3::/64".parse().unwrap()));
    assert_eq!((c.subnet6, c.cidr6), (Some("fd00:96:3::/64".parse().unwrap()), None));
    assert_eq!(parse(&c.to_string()).unwrap().etcd().unwrap().given_subnet6, c.subnet6, "{c}");
    let c = parse(&ETCD.replace("[dataplane]", "[network]\ncidr6 = \"fd00:96::/32\"\n[dataplane]")).unwrap();
    assert_eq!(c.etcd().unwrap().given_cidr6, Some("fd00:96::/32".parse().unwrap()));
}

#[test]
fn etcd_source_errors_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            ETCD.replace("endpoints = [\"http://198.18.0.10:2379\", \"http://198.18.0.11:2379\"]", "endpoints = []"),
            "[control] endpoints = []",
        ),
        (ETCD.replace("http://198.18.0.10:2379", "198.18.0.10:2379"), "[control] endpoints = \"198.18.0.10:2379\": must start with"),
        (ETCD.replace("http://198.18.0.10", "https://198.18.0.10"), "https endpoints need [control] ca"),
        (ETCD.to_owned() + "prefix = \"coreos.com\"\n", "[control] prefix = \"coreos.com\""),
        (ETCD.to_owned() + "username = \"u\"\n", "[control] username = \"u\": needs [control] password"),
        (ETCD.to_owned() + "renew_margin = 100000\n", "[control] renew_margin = 100000: must be shorter"),
        (ETCD.to_owned() + "peers = \"p.toml\"\n", "[control] peers = \"p.toml\": only meaningful with [control] source = \"file\""),
        (ETCD.replace("[dataplane]", "subnet6 = \"10.0.0.0/24\"\n[dataplane]"), "[node] subnet6 = 10.0.0.0/24: must be an IPv6 prefix"),
        (
            ETCD.replace("[dataplane]", "subnet6 = \"fd00:97::/64\"\n[network]\ncidr6 = \"fd00:96::/32\"\n[dataplane]"),
            "[node] subnet6 = fd00:97::/64: must lie inside",
        ),
        (
            ETCD.replace("public_ip = \"198.18.0.1\"", "public_ip = \"2001:db8::1\""),
            "[node] public_ip = 2001:db8::1: the etcd source needs an IPv4 public_ip",
        ),
        (ETCD.replace("source = \"etcd\"", "source = \"file\""), "missing field `subnet` in [node]"),
        (
            GOOD.to_owned() + "[control]\nendpoints = [\"http://a:1\"]\n",
            "[control] endpoints = (set): only meaningful with [control] source = \"etcd\"",
        ),
    ];
    for (text, want) in &cases {
        let err = parse(text).expect_err(want).to_string();
        assert!(err.starts_with("/etc/encapd/encapd.toml: "), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

/// Fuzzer finding (fuzz/regressions/config_file-etcd-endpoint-debug-escape.bin):
/// etcd strings were printed with Rust's `{:?}`, which writes a control
/// character as `\u{1}`, which is not TOML. Every etcd string must round-trip.
#[test]
fn effective_etcd_config_escapes_strings() {
    let text = r#"
[node]
public_ip = "198.18.0.1"
[control]
source = "etcd"
endpoints = ["https://198.18.0.10:2379\u0001", "https://198.18.0.11:2379\"q"]
prefix = "/coreos.com/net\u007fwork"
ca = "/etc/ca\u0002.pem"
cert = "/etc/cert\\.pem"
key = "/etc/k\"ey.pem"
username = "us\u0003er"
password = "pw"
state_dir = "/var/lib/enc\tapd"
subnet_env = "/run/flannel/sub\u001bnet.env"
"#;
    let c = parse(text).unwrap();
    let printed = c.to_string();
    let again = parse(&printed).unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
    let (e, a) = (c.etcd().unwrap(), again.etcd().unwrap());
    assert_eq!(a.endpoints, e.endpoints);
    assert_eq!(a.prefix, e.prefix);
    assert_eq!((&a.ca, &a.cert, &a.key), (&e.ca, &e.cert, &e.key));
    assert_eq!(a.username, e.username);
    assert_eq!(a.state_dir, e.state_dir);
    assert_eq!(again.subnet_env, c.subnet_env);
}

#[test]
fn vxlan_backend_defaults_and_errors() {
    let vx = GOOD.replace("[dataplane]", "backend = \"vxlan\"\n[dataplane]");
    let c = parse(&vx).unwrap_or_else(|e| panic!("{e}\n{vx}"));
    let Backend::Vxlan(v) = c.backend else { panic!("{:?}", c.backend) };
    assert_eq!((v.vni, c.port), (1, 8472), "flannel's (and the kernel's) defaults");
    assert_eq!(v.vtep_mac, crate::wire::vxlan::Mac::derived_from(c.public_ip), "stable across restarts");
    assert_eq!(c.tun_mtu(1500), 1450, "VXLAN costs 50 bytes");
    let again = parse(&c.to_string()).unwrap();
    assert_eq!((again.backend, again.port), (c.backend, c.port));
    let with_mac = |mac: &str| vx.replace("subnet = \"100.96.1.0/24\"", &format!("subnet = \"100.96.1.0/24\"\nvtep_mac = \"{mac}\""));
    let Backend::Vxlan(v) = parse(&with_mac("02:00:c6:12:00:07")).unwrap().backend else { panic!() };
    assert_eq!(v.vtep_mac.to_string(), "02:00:c6:12:00:07");
    for (edit, want) in [
        (vx.replace("[dataplane]", "vni = 16777216\n[dataplane]"), "[network] vni = 16777216"),
        (with_mac("02:00:c6"), "[node] vtep_mac = \"02:00:c6\""),
        (with_mac("01:00:5e:00:00:01"), "unicast"),
        (GOOD.replace("[dataplane]", "vni = 1\n[dataplane]"), "[network] vni = 1: only meaningful with backend = \"vxlan\""),
        (GOOD.replace("[dataplane]", "backend = \"geneve\"\n[dataplane]"), "unknown backend"),
        (
            vx.replace("workers = 2", "workers = 2\ningress_checksum = \"trust-outer\""),
            "[dataplane] ingress_checksum = \"trust-outer\": only meaningful with [network] backend = \"udp\"",
        ),
    ] {
        let e = parse(&edit).unwrap_err().to_string();
        assert!(e.contains(want), "{e} lacks {want}\n{edit}");
    }
}

#[test]
fn subnet_env_in_file_mode_defaults_to_flannels_and_can_be_off() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.subnet_env.as_deref(), Some(Path::new("/run/flannel/subnet.env")));
    let off = parse(&(GOOD.to_owned() + "[control]\nsubnet_env = \"off\"\n")).unwrap();
    assert_eq!(off.subnet_env, None);
    let here = parse(&(GOOD.to_owned() + "[control]\nsubnet_env = \"run/subnet.env\"\n")).unwrap();
    assert_eq!(here.subnet_env.as_deref(), Some(Path::new("/etc/encapd/run/subnet.env")));
}
