//! Loading the kernel path's eBPF object: the programs of
//! `bpf/encapd.bpf.c` (compiled by `build.rs` with clang, embedded here)
//! with this node's settings in their read-only globals, through aya, which
//! creates the maps, loads the programs with their BTF and line info (so
//! `bpftool prog dump xlated linum` shows the C source), and freezes the
//! globals so that the verifier prunes the other wire format's branches.
//! No program is attached here ([`super::KernelPath`] does that).

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::Format;

/// The object `build.rs` compiled, aligned as the ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/encapd.bpf.o"));

/// The programs' names in the object.
pub const ENCAP: &str = "encap";
pub const DECAP: &str = "decap";
/// `decap`'s checks before GRO, on the underlay's XDP hook.
pub const XDP_DECAP: &str = "xdp_decap";

/// What the programs are told about the node (their read-only globals).
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    /// The node's public (underlay) address and the backend's port.
    pub local: Ipv4Addr,
    pub port: u16,
    /// Where `encap`'s route lookups start (the interface holding `local`).
    pub underlay_ifindex: u32,
    /// The TUN, whose receive path `decap` delivers into.
    pub tun_ifindex: u32,
    /// The node's IPv4 subnet, and its IPv6 one if it has one.
    pub own4: (Ipv4Addr, u8),
    pub own6: Option<(Ipv6Addr, u8)>,
    /// The largest inner packet one datagram carries (`NodeScope::max_inner`).
    pub max_inner: u32,
    pub format: Format,
    /// Bytes in front of the IP header where `encap` runs: 0 on the TUN
    /// (what the daemon loads); 14 for `BPF_PROG_TEST_RUN`, which always
    /// presents an Ethernet frame (the differential test).
    pub egress_l2_len: u32,
    /// The underlay device's MAC (`xdp_decap` takes only frames addressed
    /// to it).
    pub underlay_mac: [u8; 6],
    /// The Ethernet source address `xdp_decap` marks what it decapsulated
    /// with, for `decap` to recognise after GRO ([`xdp_mark`]; all zero:
    /// nothing is marked, `decap` recognises nothing).
    pub xdp_mark: [u8; 6],
}

/// A fresh mark for [`ProgramConfig::xdp_mark`]: a random locally
/// administered unicast address. It is a secret, never sent on any wire:
/// a frame from the underlay that carried it as its source would be
/// delivered into the TUN unchecked, so nobody outside this host must be
/// able to guess it (46 random bits).
pub fn xdp_mark() -> [u8; 6] {
    use rand_core::RngCore;
    let mut mark = [0u8; 6];
    rand_core::OsRng.fill_bytes(&mut mark);
    mark[0] = (mark[0] & 0xfc) | 0x02;
    mark
}

/// Why the object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// aya refused the object or the kernel refused a map or a program (the
    /// message carries the verifier's log when it was the verifier).
    #[error("{what}: {source}")]
    Aya { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}

fn aya_err<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> LoadError {
    move |e| LoadError::Aya { what, source: Box::new(e) }
}

/// `net` masked to `len` bits, and the mask, as 32-bit words in network
/// order (how the programs compare addresses).
fn v4_words(net: Ipv4Addr, len: u8) -> (u32, u32) {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
    let net = u32::from(net) & mask;
    (u32::from_ne_bytes(net.to_be_bytes()), u32::from_ne_bytes(mask.to_be_bytes()))
}

fn v6_words(net: Ipv6Addr, len: u8) -> ([u32; 4], [u32; 4]) {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
    let net = u128::from(net) & mask;
    let words = |v: u128| {
        let b = v.to_be_bytes();
        std::array::from_fn(|i| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
    };
    (words(net), words(mask))
}

/// Loads the three programs (the verifier checks them) and creates the maps.
pub fn load(cfg: &ProgramConfig) -> Result<Ebpf, LoadError> {
    let local = u32::from_ne_bytes(cfg.local.octets());
    let port = u16::from_ne_bytes(cfg.port.to_be_bytes());
    let (own4_net, own4_mask) = v4_words(cfg.own4.0, cfg.own4.1);
    let (own6_net, own6_mask) = cfg.own6.map(|(n, l)| v6_words(n, l)).unwrap_or_default();
    let has_own6 = u8::from(cfg.own6.is_some());
    let (vxlan, vni_word, mac) = match cfg.format {
        Format::FlannelUdp => (0u8, 0u32, [0u8; 6]),
        // The VNI in the high 24 bits of the header's second word.
        Format::Vxlan { vni, mac } => (1, u32::from_ne_bytes((vni << 8).to_be_bytes()), mac),
    };
    let mut loader = EbpfLoader::new();
    // The programs use no CO-RE relocation: the kernel's own BTF is not needed.
    loader
        .btf(None)
        .override_global("cfg_local_ip", &local, true)
        .override_global("cfg_port", &port, true)
        .override_global("cfg_underlay_ifindex", &cfg.underlay_ifindex, true)
        .override_global("cfg_tun_ifindex", &cfg.tun_ifindex, true)
        .override_global("cfg_own4_net", &own4_net, true)
        .override_global("cfg_own4_mask", &own4_mask, true)
        .override_global("cfg_has_own6", &has_own6, true)
        .override_global("cfg_own6_net", &own6_net, true)
        .override_global("cfg_own6_mask", &own6_mask, true)
        .override_global("cfg_max_inner", &cfg.max_inner, true)
        .override_global("cfg_vxlan", &vxlan, true)
        .override_global("cfg_vni_word", &vni_word, true)
        .override_global("cfg_vtep_mac", &mac, true)
        .override_global("cfg_egress_l2_len", &cfg.egress_l2_len, true)
        .override_global("cfg_underlay_mac", &cfg.underlay_mac, true)
        .override_global("cfg_xdp_mark", &cfg.xdp_mark, true);
    let mut ebpf = loader.load(OBJECT).map_err(aya_err("loading the eBPF object"))?;
    for name in [ENCAP, DECAP] {
        program_mut(&mut ebpf, name)?.load().map_err(aya_err("loading a program (the verifier refused it)"))?;
    }
    xdp_program_mut(&mut ebpf)?.load().map_err(aya_err("loading the XDP program (the verifier refused it)"))?;
    Ok(ebpf)
}

/// Program `name` of a loaded object.
pub fn program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier, LoadError> {
    let p = ebpf.program(name).ok_or(LoadError::Aya { what: "finding a program", source: name.to_owned().into() })?;
    p.try_into().map_err(aya_err("a program of the wrong type"))
}

/// The XDP program (`xdp_decap`) of a loaded object.
pub fn xdp_program(ebpf: &Ebpf) -> Result<&Xdp, LoadError> {
    let p = ebpf.program(XDP_DECAP).ok_or(LoadError::Aya { what: "finding a program", source: XDP_DECAP.to_owned().into() })?;
    p.try_into().map_err(aya_err("a program of the wrong type"))
}

fn xdp_program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let p = ebpf.program_mut(XDP_DECAP).ok_or(LoadError::Aya { what: "finding a program", source: XDP_DECAP.to_owned().into() })?;
    p.try_into().map_err(aya_err("a program of the wrong type"))
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, LoadError> {
    let p = ebpf.program_mut(name).ok_or(LoadError::Aya { what: "finding a program", source: name.to_owned().into() })?;
    p.try_into().map_err(aya_err("a program of the wrong type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_become_network_order_words() {
        let (net, mask) = v4_words(Ipv4Addr::new(100, 96, 1, 7), 24);
        assert_eq!(net.to_ne_bytes(), [100, 96, 1, 0]);
        assert_eq!(mask.to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(v4_words(Ipv4Addr::new(1, 2, 3, 4), 0), (0, 0));
        let (net6, mask6) = v6_words("fd00:96:1::5".parse().unwrap(), 64);
        assert_eq!(net6[0].to_ne_bytes(), [0xfd, 0, 0, 0x96]);
        assert_eq!(net6[2], 0);
        assert_eq!(mask6, [u32::MAX, u32::MAX, 0, 0]);
    }

    #[test]
    fn xdp_marks_are_locally_administered_unicast_and_differ() {
        let (a, b) = (xdp_mark(), xdp_mark());
        assert_eq!(a[0] & 0x03, 0x02, "{a:02x?}");
        assert_ne!(a, b, "46 random bits twice alike");
    }

    #[test]
    fn the_object_holds_both_programs_with_line_info() {
        let obj = aya::Ebpf::load(OBJECT);
        // Parsing needs no privilege; creating maps does. Either way the
        // ELF must carry BTF with line info (what bpftool shows).
        let has = |needle: &[u8]| OBJECT.windows(needle.len()).any(|w| w == needle);
        assert!(has(b".BTF.ext"), "the object lost its BTF line info");
        assert!(has(b"encapd.bpf.c"), "the line info names the source file");
        assert!(!has(env!("CARGO_MANIFEST_DIR").as_bytes()), "source paths are relative to the package");
        drop(obj);
    }
}
