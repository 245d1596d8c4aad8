//! VXLAN (RFC 7348) as flannel's vxlan backend and the Linux kernel use it:
//! an 8-byte VXLAN header (flags `0x08`: "VNI valid", a 24-bit VNI) in a UDP
//! datagram (flannel's port 8472), then an Ethernet frame whose destination
//! is the receiving VTEP's MAC, then the IP packet — or, between VTEPs that
//! lost their static neighbour entries, an ARP request or reply.
//!
//! Views over untrusted bytes ([`parse`], [`parse_arp`]) check lengths
//! before anything is read, and builders write into caller buffers; nothing
//! here allocates.

/// VXLAN header + Ethernet header: the bytes in front of every inner IP
/// packet inside the UDP payload.
pub const HEADER_LEN: usize = VXLAN_LEN + ETHERNET_LEN;
pub const VXLAN_LEN: usize = 8;
pub const ETHERNET_LEN: usize = 14;
/// flannel's (and the kernel's `dstport 8472`) VXLAN port.
pub const FLANNEL_PORT: u16 = 8472;
/// The "I" flag: the VNI field is valid (RFC 7348 §5).
const FLAG_VNI: u8 = 0x08;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: Mac = Mac([0xff; 6]);
/// An ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast address derived from `ip` (IPv4:
    /// `02:00:` + its four bytes; IPv6: `02:` + its last five), so that a
    /// node keeps its VTEP MAC across restarts without storing it.
    pub fn derived_from(ip: std::net::IpAddr) -> Mac {
        match ip {
            std::net::IpAddr::V4(a) => {
                let o = a.octets();
                Mac([0x02, 0x00, o[0], o[1], o[2], o[3]])
            }
            std::net::IpAddr::V6(a) => {
                let o = a.octets();
                Mac([0x02, o[11], o[12], o[13], o[14], o[15]])
            }
        }
    }

    /// Multicast or broadcast (the group bit).
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address of the form 02:00:c6:12:00:01")]
pub struct MacError;

impl std::str::FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Mac, MacError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or(MacError)?;
            // Two hex digits exactly: `from_str_radix` alone would also
            // take a sign ("+2").
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacError);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| MacError)?;
        }
        if parts.next().is_some() {
            return Err(MacError);
        }
        Ok(Mac(out))
    }
}

/// Why a datagram is not a VXLAN frame encapd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    #[error("shorter than the VXLAN and Ethernet headers")]
    Truncated,
    #[error("VXLAN flags without the VNI bit")]
    BadFlags,
}

/// The headers of one VXLAN datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub vni: u32,
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

/// Reads the VXLAN and Ethernet headers of `datagram`; the Ethernet payload
/// starts at [`HEADER_LEN`]. (An 802.1Q tag is not expected between VTEPs
/// and is reported as its ethertype, 0x8100.)
pub fn parse(datagram: &[u8]) -> Result<Frame, VxlanError> {
    let h = datagram.get(..HEADER_LEN).ok_or(VxlanError::Truncated)?;
    if h[0] & FLAG_VNI == 0 {
        return Err(VxlanError::BadFlags);
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    let mac = |at: usize| Mac([h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5]]);
    Ok(Frame { vni, dst: mac(VXLAN_LEN), src: mac(VXLAN_LEN + 6), ethertype: u16::from_be_bytes([h[20], h[21]]) })
}

/// Writes the VXLAN and Ethernet headers of a frame into `out[..HEADER_LEN]`.
pub fn write_header(out: &mut [u8; HEADER_LEN], frame: &Frame) {
    out[..VXLAN_LEN].copy_from_slice(&[FLAG_VNI, 0, 0, 0, 0, 0, 0, 0]);
    out[4..7].copy_from_slice(&frame.vni.to_be_bytes()[1..]);
    out[VXLAN_LEN..VXLAN_LEN + 6].copy_from_slice(&frame.dst.0);
    out[VXLAN_LEN + 6..VXLAN_LEN + 12].copy_from_slice(&frame.src.0);
    out[20..22].copy_from_slice(&frame.ethertype.to_be_bytes());
}

/// An ARP packet (IPv4 over Ethernet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub request: bool,
    pub sender_mac: Mac,
    pub sender_ip: std::net::Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: std::net::Ipv4Addr,
}

/// Reads an ARP request or reply for IPv4 over Ethernet; `None` for
/// anything else (other hardware or protocol types, other operations,
/// too short).
pub fn parse_arp(p: &[u8]) -> Option<Arp> {
    let p = p.get(..ARP_LEN)?;
    if p[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let request = match u16::from_be_bytes([p[6], p[7]]) {
        ARP_REQUEST => true,
        ARP_REPLY => false,
        _ => return None,
    };
    let mac = |at: usize| Mac([p[at], p[at + 1], p[at + 2], p[at + 3], p[at + 4], p[at + 5]]);
    let ip = |at: usize| std::net::Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    Some(Arp { request, sender_mac: mac(8), sender_ip: ip(14), target_mac: mac(18), target_ip: ip(24) })
}

/// Writes `arp` as 28 bytes into `out`.
pub fn write_arp(out: &mut [u8; ARP_LEN], arp: &Arp) {
    out[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    out[6..8].copy_from_slice(&(if arp.request { ARP_REQUEST } else { ARP_REPLY }).to_be_bytes());
    out[8..14].copy_from_slice(&arp.sender_mac.0);
    out[14..18].copy_from_slice(&arp.sender_ip.octets());
    out[18..24].copy_from_slice(&arp.target_mac.0);
    out[24..28].copy_from_slice(&arp.target_ip.octets());
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A frame as `tcpdump -XX` shows a kernel VTEP's (flannel.1, VNI 1).
    const KERNEL_FRAME: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, // VXLAN: I flag, VNI 1
        0x02, 0x00, 0xc6, 0x12, 0x00, 0x01, // dst MAC
        0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44, // src MAC
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn parses_and_writes_the_kernel_layout() {
        let f = parse(&KERNEL_FRAME).unwrap();
        assert_eq!(f.vni, 1);
        assert_eq!(f.dst, "02:00:c6:12:00:01".parse().unwrap());
        assert_eq!(f.src.to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!(f.ethertype, ETHERTYPE_IPV4);
        let mut out = [0u8; HEADER_LEN];
        write_header(&mut out, &f);
        assert_eq!(out, KERNEL_FRAME);
        let big = Frame { vni: 0x00ab_cdef, ..f };
        write_header(&mut out, &big);
        assert_eq!(parse(&out).unwrap().vni, 0x00ab_cdef, "24-bit VNI round-trips");
    }

    #[test]
    fn refuses_short_or_flagless_headers() {
        assert_eq!(parse(&KERNEL_FRAME[..21]), Err(VxlanError::Truncated));
        let mut no_vni = KERNEL_FRAME;
        no_vni[0] = 0;
        assert_eq!(parse(&no_vni), Err(VxlanError::BadFlags));
    }

    #[test]
    fn macs_parse_print_and_derive() {
        assert_eq!(Mac::derived_from("198.18.0.1".parse().unwrap()).to_string(), "02:00:c6:12:00:01");
        assert!(!Mac::derived_from("fd00::1".parse().unwrap()).is_group());
        assert!(BROADCAST.is_group());
        for bad in [
            "",
            "02:00:c6:12:00",
            "02:00:c6:12:00:01:02",
            "02:00:c6:12:00:zz",
            "2:00:c6:12:00:01",
            "+2:00:c6:12:00:01",
            "02:00:c6:12:00:-1",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(MacError), "{bad:?}");
        }
    }

    #[test]
    fn arp_round_trips_and_rejects_other_kinds() {
        let req = Arp {
            request: true,
            sender_mac: "c6:d2:32:6f:8f:44".parse().unwrap(),
            sender_ip: Ipv4Addr::new(100, 96, 2, 0),
            target_mac: Mac::default(),
            target_ip: Ipv4Addr::new(100, 96, 1, 0),
        };
        let mut out = [0u8; ARP_LEN];
        write_arp(&mut out, &req);
        assert_eq!(parse_arp(&out), Some(req));
        let mut other = out;
        other[7] = 3; // RARP request
        assert_eq!(parse_arp(&other), None);
        assert_eq!(parse_arp(&out[..27]), None);
    }
}
