//! Underlay profiles: how the link between the nodes behaves.
//!
//! - [`Underlay::Veth`]: a plain veth pair. It hands a 64 KB TSO packet
//!   from one namespace to the other whole: nobody segments, nobody runs
//!   GRO. No wire does that, and it flatters whoever sends super-packets
//!   (kernel VXLAN and encapd's kernel path most).
//! - [`Underlay::Wire`]: the same veth with segmentation offloads off and
//!   GRO on, at both ends: frames leave at the MTU, as from a NIC without
//!   tunnel offloads (the kernel segments in software before the device,
//!   which a NIC with tunnel TSO would do in hardware), and the receiver's
//!   GRO merges them again, as every NIC's driver does (veth gets NAPI once
//!   GRO is on). What it does not model: a NIC's hardware segmentation and
//!   checksum offloads, the wire's serialization delay, loss, and RSS over
//!   several receive queues.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::netns::ns_exec;

/// How the nodes' underlay link behaves (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Underlay {
    /// A plain veth pair: TSO packets cross whole.
    #[default]
    Veth,
    /// MTU-sized frames on the link, GRO on receive.
    Wire,
}

/// The `ethtool -K` features that make a veth behave like a wire: no
/// segmentation offload of any kind on transmit (TCP, UDP, UDP tunnels),
/// GRO on receive.
pub const WIRE_FEATURES: &[&str] = &[
    "tso",
    "off",
    "gso",
    "off",
    "tx-udp_tnl-segmentation",
    "off",
    "tx-udp_tnl-csum-segmentation",
    "off",
    "tx-udp-segmentation",
    "off",
    "gro",
    "on",
];

impl Underlay {
    /// Both profiles, in the order reports list them.
    pub const ALL: [Underlay; 2] = [Underlay::Veth, Underlay::Wire];

    /// The profile's name in reports, file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Underlay::Veth => "veth",
            Underlay::Wire => "wire",
        }
    }

    /// The profile named by `$ENCAPD_UNDERLAY` (`veth` or `wire`), else
    /// `veth`. Panics on any other value: a typo must not silently test
    /// the other profile.
    pub fn from_env() -> Underlay {
        match std::env::var("ENCAPD_UNDERLAY") {
            Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|e| panic!("ENCAPD_UNDERLAY: {e}")),
            _ => Underlay::Veth,
        }
    }

    /// Applies the profile to interface `dev` in namespace `ns` (a no-op
    /// for [`Underlay::Veth`]). Panics when ethtool refuses.
    pub fn apply(self, ns: &str, dev: &str) {
        if self == Underlay::Veth {
            return;
        }
        let mut args = vec!["ethtool", "-K", dev];
        args.extend_from_slice(WIRE_FEATURES);
        let o = ns_exec(ns, &args, Duration::from_secs(10));
        assert!(o.ok(), "{} in {ns} failed: {}", args.join(" "), o.text());
    }
}

impl fmt::Display for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Underlay {
    type Err = String;

    fn from_str(s: &str) -> Result<Underlay, String> {
        match s {
            "veth" => Ok(Underlay::Veth),
            "wire" => Ok(Underlay::Wire),
            other => Err(format!("unknown underlay profile {other:?}; expected \"veth\" or \"wire\"")),
        }
    }
}

/// Runs each listed test function (`fn NAME(u: Underlay)`) on every
/// underlay profile, as `#[test]`s named `veth::NAME` and `wire::NAME`, so a
/// suite lists its tests once and `cargo test wire::` picks one profile.
#[macro_export]
macro_rules! on_each_underlay {
    ($($test:ident),* $(,)?) => {
        $crate::on_each_underlay!(@profile veth: $($test),*);
        $crate::on_each_underlay!(@profile wire: $($test),*);
    };
    (@profile $underlay:ident: $($test:ident),*) => {
        mod $underlay {
            $(
                #[test]
                fn $test() {
                    super::$test(stringify!($underlay).parse().expect("an underlay profile"));
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_are_refused() {
        for u in Underlay::ALL {
            assert_eq!(u.name().parse::<Underlay>(), Ok(u));
        }
        assert!("wires".parse::<Underlay>().is_err());
    }

    #[test]
    fn the_wire_profile_turns_every_segmentation_offload_off_and_gro_on() {
        let pairs: Vec<(&str, &str)> = WIRE_FEATURES.chunks(2).map(|p| (p[0], p[1])).collect();
        assert!(pairs.iter().filter(|(f, _)| *f != "gro").all(|(_, v)| *v == "off"), "{pairs:?}");
        assert!(pairs.contains(&("gro", "on")));
    }
}
