//! The kernel path's two traffic-control programs, as instructions (no
//! I/O): `encap` on the TUN's egress wraps an IPv4 packet for a peer's
//! subnet in the backend's wire format and sends it out of the underlay
//! interface; `decap` on the underlay's ingress unwraps such a datagram
//! from a peer and hands the inner packet to the stack as if the TUN had
//! received it. Two wire formats ([`Format`]): flannel's udp (outer IPv4 +
//! UDP, then the inner packet) and flannel's vxlan as a kernel VTEP speaks
//! it (outer IPv4 + UDP, a VXLAN header with our VNI, an Ethernet header
//! from our VTEP MAC to the peer's, then the inner packet).
//!
//! What each program leaves alone goes on as before (`TCX_NEXT`): to the
//! TUN and the workers, or to the UDP socket and the workers. That is
//! every packet the programs do not fully understand: IPv6, a destination
//! with no route in the map, an outer header with options or fragments, a
//! datagram for another port or address, a VXLAN frame for another VNI or
//! MAC or that is not IPv4 (ARP stays with the workers, which answer it),
//! a datagram whose inner source does not belong to the sending peer (the
//! workers drop and count it, as the ingress filter does for every
//! datagram), a coalesced run of several datagrams. A packet a program has
//! started to change and cannot finish is dropped and counted
//! ([`Counter::EncapFailed`]).
//!
//! Map layouts, shared with `super::KernelPath`:
//! - routes (LPM trie): key = prefix length (`u32`, host order) + IPv4
//!   network (4 bytes, network order); value ([`ROUTE_VALUE_LEN`] bytes) =
//!   the peer's underlay IPv4 address (4 bytes, network order), its VTEP
//!   MAC (6 bytes; zero for udp), a flags byte ([`ROUTE_ENCAP`]), a byte
//!   of padding.
//! - counters (per-CPU array of [`Counter`]): value = packets (`u64`),
//!   bytes of inner packets (`u64`).

use std::net::Ipv4Addr;

use super::asm::{Alu, Asm, Cond, FP, Insn, Label, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, Size};
use crate::wire::vxlan::{self, Frame, Mac};

/// Length of the outer IPv4 + UDP headers.
const IP_UDP_LEN: i32 = 28;
const ETH_LEN: i32 = vxlan::ETHERNET_LEN as i32;
/// Bytes of a routes-map value.
pub const ROUTE_VALUE_LEN: u32 = 12;
/// Where a routes-map value holds its flags.
pub const ROUTE_FLAGS_AT: usize = 10;
/// Route flag: `encap` may send to this peer (it decapsulates in its
/// kernel). Without it `encap` leaves the packet to the workers; `decap`
/// takes the peer's datagrams either way.
pub const ROUTE_ENCAP: u8 = 1;
/// Where `encap` builds the outer headers on its stack (8-aligned; the
/// verifier insists that stack accesses be aligned to their size).
const HDR: i16 = -64;

/// The wire format both programs speak: the node's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// flannel's udp backend: the inner packet is the UDP payload, both
    /// ports are the flannel port.
    FlannelUdp,
    /// flannel's vxlan backend: a VXLAN header with `vni` and an Ethernet
    /// header from `mac` (this node's VTEP) to the peer's VTEP MAC in
    /// front of the inner packet; the source port spread by flow, as a
    /// kernel VTEP does (RFC 7348, section 5).
    Vxlan { vni: u32, mac: [u8; 6] },
}

impl Format {
    /// Bytes between the UDP header and the inner packet.
    const fn prefix_len(self) -> i32 {
        match self {
            Format::FlannelUdp => 0,
            Format::Vxlan { .. } => vxlan::HEADER_LEN as i32,
        }
    }

    /// For vxlan, the bytes between the UDP header and the inner packet as
    /// `wire::vxlan` writes them, with a zero destination MAC (the program
    /// takes the peer's from the route); the programs copy and compare
    /// them word by word.
    fn vxlan_prefix(vni: u32, mac: [u8; 6]) -> [u8; vxlan::HEADER_LEN] {
        let mut h = [0u8; vxlan::HEADER_LEN];
        vxlan::write_header(&mut h, &Frame { vni, dst: Mac::default(), src: Mac(mac), ethertype: vxlan::ETHERTYPE_IPV4 });
        h
    }

    /// Bytes added in front of the inner packet (the outer Ethernet header
    /// not counted).
    pub const fn outer_len(self) -> i32 {
        IP_UDP_LEN + self.prefix_len()
    }
}

// Kernel helper numbers (include/uapi/linux/bpf.h).
const MAP_LOOKUP_ELEM: i32 = 1;
const SKB_STORE_BYTES: i32 = 9;
const REDIRECT: i32 = 23;
const SKB_CHANGE_HEAD: i32 = 43;
const SKB_ADJUST_ROOM: i32 = 50;
const GET_HASH_RECALC: i32 = 34;
const REDIRECT_NEIGH: i32 = 152;

const ADJ_ROOM_MAC: i32 = 1;
const F_ADJ_ROOM_FIXED_GSO: i32 = 1 << 0;
const F_ADJ_ROOM_ENCAP_L3_IPV4: i32 = 1 << 1;
const F_ADJ_ROOM_ENCAP_L4_UDP: i32 = 1 << 4;
const F_ADJ_ROOM_ENCAP_L2_ETH: u64 = 1 << 6;
/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner link-layer header's length.
const fn f_adj_room_encap_l2(len: i32) -> u64 {
    ((len as u64) & 0xff) << 56
}
const F_INGRESS: i32 = 1;

/// TCX verdicts.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;

// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_PROTOCOL: i16 = 16;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// The counters the programs keep, by index in the counters map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Packets encapsulated and sent to a peer.
    Encapsulated = 0,
    /// Datagrams decapsulated and delivered.
    Decapsulated = 1,
    /// Packets dropped because the kernel refused a step half-way
    /// (`bpf_skb_store_bytes` or `bpf_skb_change_head` after the room for
    /// the outer headers was made).
    EncapFailed = 2,
}

impl Counter {
    pub const ALL: [Counter; 3] = [Counter::Encapsulated, Counter::Decapsulated, Counter::EncapFailed];
    /// Entries of the counters map.
    pub const SLOTS: u32 = 3;
}

/// What the encapsulating program writes into every outer header.
#[derive(Debug, Clone, Copy)]
pub struct EncapParams {
    /// The node's public (underlay) address: the outer source.
    pub local: Ipv4Addr,
    /// The flannel udp port: outer source and destination port.
    pub port: u16,
    /// The interface holding `local`, where encapsulated packets leave.
    pub underlay_ifindex: u32,
    pub format: Format,
}

/// What the decapsulating program accepts.
#[derive(Debug, Clone, Copy)]
pub struct DecapParams {
    /// The node's public address: the outer destination it accepts.
    pub local: Ipv4Addr,
    pub port: u16,
    /// The node's own IPv4 subnet: the only inner destinations it delivers.
    pub subnet: Ipv4Addr,
    pub subnet_len: u8,
    /// The TUN, whose receive path delivers the inner packet.
    pub tun_ifindex: u32,
    pub format: Format,
}

/// A `u32` whose bytes in memory are `bytes` (network order in, as the
/// program loads it from a packet).
fn ne32(bytes: [u8; 4]) -> u32 {
    u32::from_ne_bytes(bytes)
}

fn ne16(bytes: [u8; 2]) -> u32 {
    u32::from(u16::from_ne_bytes(bytes))
}

/// The 32- and 16-bit words of `bytes` at `at`, as the program loads them.
fn word32(bytes: &[u8], at: usize) -> u32 {
    ne32([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn word16(bytes: &[u8], at: usize) -> u32 {
    ne16([bytes[at], bytes[at + 1]])
}

/// `skb->protocol == ETH_P_IP` as the program reads the field.
fn eth_p_ip() -> u32 {
    ne16([0x08, 0x00])
}

/// The common start of both programs: R6 = the skb; unless it is IPv4
/// with at least `need` bytes readable from the start, to `next`; R7 = the
/// start of its data (checked for `need` bytes).
fn ipv4_with(a: &mut Asm, need: i32, next: Label) {
    a.alu_reg(Alu::Mov, R6, R1);
    a.load(Size::W, R2, R6, SKB_PROTOCOL);
    a.jump32_imm(Cond::Ne, R2, eth_p_ip(), next);
    a.load(Size::W, R7, R6, SKB_DATA);
    a.load(Size::W, R3, R6, SKB_DATA_END);
    a.alu_reg(Alu::Mov, R2, R7);
    a.alu_imm(Alu::Add, R2, need);
    a.jump_reg(Cond::Gt, R2, R3, next);
}

/// R0 = the value in map `map_fd` for the key on the stack at `fp + key_at`;
/// jumps to `miss` when there is none. Clobbers R0–R5.
fn lookup(a: &mut Asm, map_fd: i32, key_at: i32, miss: Label) {
    a.load_map(R1, map_fd);
    a.alu_reg(Alu::Mov, R2, FP);
    a.alu_imm(Alu::Add, R2, key_at);
    a.call(MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, R0, 0, miss);
}

/// R0 = the routes map's value (the owning peer's underlay address) for
/// the IPv4 address in `addr`; jumps to `miss` when no subnet holds it.
/// The LPM key {32, addr} goes to fp-8. Clobbers R0–R5.
fn route_of(a: &mut Asm, routes_fd: i32, addr: super::asm::Reg, miss: Label) {
    a.store(Size::W, FP, -4, addr);
    a.store_imm(Size::W, FP, -8, 32);
    lookup(a, routes_fd, -8, miss);
}

/// Adds 1 packet and `bytes` (a register that survives calls) to
/// `counter`. Clobbers R0–R5.
fn count(a: &mut Asm, counters_fd: i32, counter: Counter, bytes: super::asm::Reg) {
    let skip = a.label();
    a.store_imm(Size::W, FP, -40, counter as i32);
    lookup(a, counters_fd, -40, skip);
    // Per-CPU values: no other program touches this CPU's copy meanwhile.
    a.load(Size::DW, R1, R0, 0);
    a.alu_imm(Alu::Add, R1, 1);
    a.store(Size::DW, R0, 0, R1);
    a.load(Size::DW, R1, R0, 8);
    a.alu_reg(Alu::Add, R1, bytes);
    a.store(Size::DW, R0, 8, R1);
    a.place(skip);
}

fn verdict(a: &mut Asm, label: Label, value: i32) {
    a.place(label);
    a.alu_imm(Alu::Mov, R0, value);
    a.exit();
}

/// The outer IPv4 header's constant 16-bit words summed (what the program
/// adds the length and destination to before folding the checksum).
fn outer_header_sum(p: &EncapParams) -> u32 {
    let s = p.local.octets();
    let words: [[u8; 2]; 5] = [[0x45, 0x00], [0x40, 0x00], [64, 17], [s[0], s[1]], [s[2], s[3]]];
    words.iter().map(|w| ne16(*w)).sum()
}

/// TUN egress: IPv4 to a routed peer subnet → outer IPv4/UDP → underlay.
/// Only to a peer whose route has [`ROUTE_ENCAP`]: what this program sends
/// may be a whole TSO packet or carry an inner checksum left for the
/// device to finish, and across a veth it arrives so, which only a kernel
/// decapsulation accepts.
///
/// The outer header is what encapd's workers send: DF set (as a Linux UDP
/// socket, the workers' or flanneld's, sends by default; a kernel VTEP
/// leaves it clear, which no receiver checks), TTL 64, and a UDP checksum
/// of 0 (allowed over IPv4, and what the kernel's own UDP tunnels send):
/// for a TSO packet the kernel replicates the header into every segment it
/// cuts, and there is no helper to ask it for an outer checksum. Ports:
/// udp, the flannel port both ways; vxlan, the flannel port as the
/// destination and a source port from the flow's hash in 49152–65535, so
/// that a receiver's RSS spreads the flows. The inner packet is untouched;
/// a TSO packet stays one (its `gso_size` fixed, the segments growing by
/// the outer bytes, as the TUN's MTU leaves room for).
pub fn encap(p: &EncapParams, routes_fd: i32, counters_fd: i32) -> Vec<Insn> {
    let outer = p.format.outer_len();
    let mut a = Asm::new();
    let next = a.label();
    let drop = a.label();
    ipv4_with(&mut a, 20, next);
    a.load(Size::B, R2, R7, 0);
    a.alu_imm(Alu::And, R2, 0xf0);
    a.jump32_imm(Cond::Ne, R2, 0x40, next);
    a.load(Size::W, R2, R7, 16);
    route_of(&mut a, routes_fd, R2, next);
    a.load(Size::B, R2, R0, ROUTE_FLAGS_AT as i16);
    a.jump32_imm(Cond::Eq, R2, 0, next); // the peer reads datagrams in user space
    a.load(Size::W, R8, R0, 0); // the peer's underlay address
    let port = p.port.to_be_bytes();
    match p.format {
        Format::FlannelUdp => {
            a.store_imm(Size::W, FP, HDR + 20, ne32([port[0], port[1], port[0], port[1]]) as i32);
        }
        Format::Vxlan { vni, mac } => {
            // VXLAN header, then the inner Ethernet header: the peer's
            // VTEP MAC (from the route), ours, IPv4. The prefix starts at
            // HDR + 28; its word boundaries match the stack's alignment.
            let h = Format::vxlan_prefix(vni, mac);
            a.store_imm(Size::W, FP, HDR + 28, word32(&h, 0) as i32);
            a.store_imm(Size::W, FP, HDR + 32, word32(&h, 4) as i32);
            a.load(Size::W, R2, R0, 4);
            a.store(Size::W, FP, HDR + 36, R2);
            a.load(Size::H, R2, R0, 8);
            a.store(Size::H, FP, HDR + 40, R2);
            a.store_imm(Size::H, FP, HDR + 42, word16(&h, 14) as i32);
            a.store_imm(Size::W, FP, HDR + 44, word32(&h, 16) as i32);
            a.store_imm(Size::H, FP, HDR + 48, word16(&h, 20) as i32);
            a.store_imm(Size::H, FP, HDR + 22, ne16(port) as i32);
            a.alu_reg(Alu::Mov, R1, R6);
            a.call(GET_HASH_RECALC);
            a.alu_imm(Alu::And, R0, 0x3fff);
            a.alu_imm(Alu::Or, R0, 0xc000);
            a.to_be(R0, 16);
            a.store(Size::H, FP, HDR + 20, R0);
        }
    }
    a.load(Size::W, R9, R6, SKB_LEN); // the inner packet's length
    // Room for the outer headers in front of the inner packet. On failure
    // the packet is unchanged: the workers take it.
    a.alu_reg(Alu::Mov, R1, R6);
    a.alu_imm(Alu::Mov, R2, outer);
    a.alu_imm(Alu::Mov, R3, ADJ_ROOM_MAC);
    let flags = F_ADJ_ROOM_FIXED_GSO | F_ADJ_ROOM_ENCAP_L3_IPV4 | F_ADJ_ROOM_ENCAP_L4_UDP;
    match p.format {
        Format::FlannelUdp => a.alu_imm(Alu::Mov, R4, flags),
        Format::Vxlan { .. } => a.mov64_imm(R4, flags as u64 | F_ADJ_ROOM_ENCAP_L2_ETH | f_adj_room_encap_l2(ETH_LEN)),
    }
    a.call(SKB_ADJUST_ROOM);
    a.jump32_imm(Cond::Ne, R0, 0, next);
    // The outer IPv4 header and the UDP length, word by word.
    let s = p.local.octets();
    a.store_imm(Size::W, FP, HDR, ne32([0x45, 0x00, 0, 0]) as i32);
    a.store_imm(Size::W, FP, HDR + 4, ne32([0, 0, 0x40, 0x00]) as i32);
    a.store_imm(Size::W, FP, HDR + 8, ne32([64, 17, 0, 0]) as i32);
    a.store_imm(Size::W, FP, HDR + 12, ne32(s) as i32);
    a.store(Size::W, FP, HDR + 16, R8);
    a.store_imm(Size::H, FP, HDR + 26, 0);
    a.alu_reg(Alu::Mov, R2, R9);
    a.alu_imm(Alu::Add, R2, outer);
    a.to_be(R2, 16);
    a.store(Size::H, FP, HDR + 2, R2); // IPv4 total length
    a.alu_reg(Alu::Mov, R3, R9);
    a.alu_imm(Alu::Add, R3, outer - 20);
    a.to_be(R3, 16);
    a.store(Size::H, FP, HDR + 24, R3); // UDP length
    // Header checksum: the constant words, the length, the destination's
    // two halves; folded twice, complemented.
    a.alu_reg(Alu::Mov, R4, R8);
    a.alu_imm(Alu::And, R4, 0xffff);
    a.alu_reg(Alu::Mov, R5, R8);
    a.alu_imm(Alu::Rsh, R5, 16);
    a.alu_reg(Alu::Add, R4, R5);
    a.alu_reg(Alu::Add, R4, R2);
    a.alu_imm(Alu::Add, R4, outer_header_sum(p) as i32);
    for _ in 0..2 {
        a.alu_reg(Alu::Mov, R5, R4);
        a.alu_imm(Alu::Rsh, R5, 16);
        a.alu_imm(Alu::And, R4, 0xffff);
        a.alu_reg(Alu::Add, R4, R5);
    }
    a.alu_imm(Alu::Xor, R4, 0xffff);
    a.store(Size::H, FP, HDR + 10, R4);
    a.alu_reg(Alu::Mov, R1, R6);
    a.alu_imm(Alu::Mov, R2, 0);
    a.alu_reg(Alu::Mov, R3, FP);
    a.alu_imm(Alu::Add, R3, i32::from(HDR));
    a.alu_imm(Alu::Mov, R4, outer);
    a.alu_imm(Alu::Mov, R5, 0);
    a.call(SKB_STORE_BYTES);
    a.jump32_imm(Cond::Ne, R0, 0, drop);
    // The TUN has no link layer; the neighbour lookup below fills in the
    // Ethernet header this makes room for (it refuses a packet without).
    a.alu_reg(Alu::Mov, R1, R6);
    a.alu_imm(Alu::Mov, R2, ETH_LEN);
    a.alu_imm(Alu::Mov, R3, 0);
    a.call(SKB_CHANGE_HEAD);
    a.jump32_imm(Cond::Ne, R0, 0, drop);
    count(&mut a, counters_fd, Counter::Encapsulated, R9);
    // Routes the outer destination and resolves its neighbour, as the
    // stack would for the socket's datagram.
    a.mov32_imm(R1, p.underlay_ifindex);
    a.alu_imm(Alu::Mov, R2, 0);
    a.alu_imm(Alu::Mov, R3, 0);
    a.alu_imm(Alu::Mov, R4, 0);
    a.call(REDIRECT_NEIGH);
    a.exit();
    a.place(drop);
    count(&mut a, counters_fd, Counter::EncapFailed, R9);
    a.alu_imm(Alu::Mov, R0, TCX_DROP);
    a.exit();
    verdict(&mut a, next, TCX_NEXT);
    a.finish()
}

/// Underlay ingress: a peer's datagram in the node's wire format, for
/// this node's subnet → the inner packet, received by the TUN.
///
/// Accepted only when every one of these holds, else the datagram goes on
/// to the socket and the workers: outer IPv4 without options or
/// fragmentation, UDP to `local:port`; for vxlan a VXLAN header with only
/// the VNI flag and our VNI, and an Ethernet header to our VTEP MAC
/// carrying IPv4; an inner IPv4 packet without options whose total length
/// is the rest of the datagram (one packet, not a coalesced run), an inner
/// destination in this node's subnet, and an inner source in a subnet
/// whose owner (the routes map) is the outer source.
pub fn decap(p: &DecapParams, routes_fd: i32, counters_fd: i32) -> Vec<Insn> {
    const OUTER_IP: i16 = ETH_LEN as i16;
    const UDP: i16 = OUTER_IP + 20;
    const PREFIX: i16 = UDP + 8;
    let outer = p.format.outer_len();
    let inner = OUTER_IP + outer as i16;
    let mut a = Asm::new();
    let next = a.label();
    ipv4_with(&mut a, i32::from(inner) + 20, next);
    a.load(Size::B, R2, R7, OUTER_IP);
    a.jump32_imm(Cond::Ne, R2, 0x45, next);
    a.load(Size::B, R2, R7, OUTER_IP + 9);
    a.jump32_imm(Cond::Ne, R2, 17, next);
    a.load(Size::H, R2, R7, OUTER_IP + 6);
    a.alu_imm(Alu::And, R2, ne16([0x3f, 0xff]) as i32);
    a.jump32_imm(Cond::Ne, R2, 0, next);
    a.load(Size::W, R2, R7, OUTER_IP + 16);
    a.jump32_imm(Cond::Ne, R2, ne32(p.local.octets()), next);
    a.load(Size::H, R2, R7, UDP + 2);
    a.jump32_imm(Cond::Ne, R2, ne16(p.port.to_be_bytes()), next);
    if let Format::Vxlan { vni, mac } = p.format {
        // The VXLAN header and EtherType as ours would be; the destination
        // MAC is ours (the sender's, in the frame, is not checked).
        let h = Format::vxlan_prefix(vni, mac);
        let eth = PREFIX + vxlan::VXLAN_LEN as i16;
        a.load(Size::W, R2, R7, PREFIX);
        a.jump32_imm(Cond::Ne, R2, word32(&h, 0), next);
        a.load(Size::W, R2, R7, PREFIX + 4);
        a.jump32_imm(Cond::Ne, R2, word32(&h, 4), next);
        a.load(Size::W, R2, R7, eth);
        a.jump32_imm(Cond::Ne, R2, word32(&mac, 0), next);
        a.load(Size::H, R2, R7, eth + 4);
        a.jump32_imm(Cond::Ne, R2, word16(&mac, 4), next);
        a.load(Size::H, R2, R7, eth + 12);
        a.jump32_imm(Cond::Ne, R2, word16(&h, 20), next);
    }
    // Inner IPv4 without options: anything else, malformed or not, is the
    // workers' to forward or to drop and count.
    a.load(Size::B, R2, R7, inner);
    a.jump32_imm(Cond::Ne, R2, 0x45, next);
    // One whole inner packet: its total length is the rest of the skb.
    a.load(Size::W, R9, R6, SKB_LEN);
    a.alu_imm(Alu::Sub, R9, i32::from(inner));
    a.load(Size::H, R2, R7, inner + 2);
    a.to_be(R2, 16);
    a.jump32_reg(Cond::Ne, R2, R9, next);
    // For this node's subnet.
    let mask = if p.subnet_len == 0 { 0 } else { u32::MAX << (32 - u32::from(p.subnet_len.min(32))) };
    let net = u32::from(p.subnet) & mask;
    a.load(Size::W, R2, R7, inner + 16);
    a.mov32_imm(R3, ne32(mask.to_be_bytes()));
    a.alu_reg(Alu::And, R2, R3);
    a.jump32_imm(Cond::Ne, R2, ne32(net.to_be_bytes()), next);
    // From the peer that owns the inner source's subnet.
    a.load(Size::W, R8, R7, OUTER_IP + 12);
    a.load(Size::W, R2, R7, inner + 12);
    route_of(&mut a, routes_fd, R2, next);
    a.load(Size::W, R2, R0, 0);
    a.jump32_reg(Cond::Ne, R2, R8, next);
    // Strip the outer headers (and, for vxlan, the inner Ethernet header)
    // behind the outer Ethernet header; a TSO packet keeps its segment
    // size. On failure the datagram is unchanged.
    a.alu_reg(Alu::Mov, R1, R6);
    a.alu_imm(Alu::Mov, R2, -outer);
    a.alu_imm(Alu::Mov, R3, ADJ_ROOM_MAC);
    a.alu_imm(Alu::Mov, R4, F_ADJ_ROOM_FIXED_GSO);
    a.call(SKB_ADJUST_ROOM);
    a.jump32_imm(Cond::Ne, R0, 0, next);
    count(&mut a, counters_fd, Counter::Decapsulated, R9);
    a.mov32_imm(R1, p.tun_ifindex);
    a.alu_imm(Alu::Mov, R2, F_INGRESS);
    a.call(REDIRECT);
    a.exit();
    verdict(&mut a, next, TCX_NEXT);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encap_params() -> EncapParams {
        EncapParams { local: Ipv4Addr::new(198, 18, 0, 1), port: 8285, underlay_ifindex: 2, format: Format::FlannelUdp }
    }

    const VXLAN: Format = Format::Vxlan { vni: 1, mac: [0x02, 0, 198, 18, 0, 1] };

    /// The checksum the program computes, replayed: constant words plus
    /// the length and destination, folded, equals the RFC 1071 checksum of
    /// the finished header.
    #[test]
    fn the_outer_checksum_matches_the_header_it_covers() {
        let p = encap_params();
        let dst = Ipv4Addr::new(198, 18, 0, 2).octets();
        let inner_len: u16 = 1400;
        let tot = (inner_len + 28).to_be_bytes();
        let s = p.local.octets();
        let header = [0x45, 0, tot[0], tot[1], 0, 0, 0x40, 0, 64, 17, 0, 0, s[0], s[1], s[2], s[3], dst[0], dst[1], dst[2], dst[3]];
        let mut sum = outer_header_sum(&p) + ne16([tot[0], tot[1]]) + ne16([dst[0], dst[1]]) + ne16([dst[2], dst[3]]);
        for _ in 0..2 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let check = (!sum as u16).to_ne_bytes();
        let mut full = header;
        full[10] = check[0];
        full[11] = check[1];
        // A header with its checksum in place sums to 0xffff.
        let total: u32 = full.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        let folded = (total & 0xffff) + (total >> 16);
        assert_eq!(folded, 0xffff, "{full:02x?}");
    }

    #[test]
    fn both_programs_assemble_and_end_in_exits_in_both_formats() {
        for format in [Format::FlannelUdp, VXLAN] {
            let e = encap(&EncapParams { format, ..encap_params() }, 3, 4);
            let d = decap(
                &DecapParams {
                    local: Ipv4Addr::new(198, 18, 0, 2),
                    port: 8285,
                    subnet: Ipv4Addr::new(100, 96, 2, 0),
                    subnet_len: 24,
                    tun_ifindex: 5,
                    format,
                },
                3,
                4,
            );
            for prog in [&e, &d] {
                assert_eq!(prog.last().map(|i| i.code), Some(0x95));
                assert!(prog.len() < 200, "{format:?}: {} instructions", prog.len());
            }
        }
    }

    #[test]
    fn the_headers_in_front_of_the_inner_packet_are_the_wire_formats() {
        assert_eq!(Format::FlannelUdp.outer_len(), 28);
        assert_eq!(VXLAN.outer_len() as usize, 28 + crate::wire::vxlan::HEADER_LEN);
        // The stack area holds them without reaching the lookup key (fp-8).
        assert!(i32::from(HDR) + VXLAN.outer_len() <= -8);
    }

    /// The inner Ethernet header's length goes to bits 56..63 of the
    /// flags, as `BPF_F_ADJ_ROOM_ENCAP_L2(len)` puts it.
    #[test]
    fn the_inner_link_header_length_is_encoded_in_the_top_byte() {
        assert_eq!(f_adj_room_encap_l2(14), 14u64 << 56);
    }
}
