use super::*;

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
    ];
    for (text, want) in &cases {
        let err = parse(text).expect_err(want).to_string();
        assert!(err.starts_with("/etc/encapd/encapd.toml: "), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}
