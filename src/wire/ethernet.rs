//! The Ethernet II header (IEEE 802.3 §3.2.6) that a VXLAN datagram
//! carries in front of its inner packet, as a view over a buffer
//! ([`EthernetFrame`]); the MAC address type [`Mac`].
//!
//! [`EthernetFrame::check_len`] accepts any buffer of at least 14 bytes;
//! after it, no accessor panics (see the [module promise](crate::wire)). An
//! 802.1Q tag is not expected between VTEPs: it shows as its ethertype,
//! 0x8100.

use super::{Truncated, read_u16, write_u16};

/// Byte offsets of the header's fields.
pub mod field {
    use std::ops::Range;

    pub const DST_ADDR: Range<usize> = 0..6;
    pub const SRC_ADDR: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: Mac = Mac([0xff; 6]);

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

    /// The address in the first six of `bytes` (which must hold them).
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Mac {
        Mac([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
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

/// A view of an Ethernet frame in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, Truncated> {
        let frame = EthernetFrame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the 14-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Truncated> {
        Truncated::check("Ethernet", self.buffer.as_ref().len(), HEADER_LEN)
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::DST_ADDR])
    }

    #[inline]
    pub fn src_addr(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, value);
    }

    /// What follows the header, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame from c6:d2:32:6f:8f:44 to 02:00:c6:12:00:01 holding IPv6.
    const FRAME: [u8; 16] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44, 0x86, 0xdd, 0x60, 0x00];

    #[test]
    fn reads_and_writes_every_field() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr().to_string(), "02:00:c6:12:00:01");
        assert_eq!(f.src_addr().to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!((f.ethertype(), f.payload()), (ETHERTYPE_IPV6, &[0x60, 0x00][..]));
        let mut buf = [0u8; 16];
        let mut w = EthernetFrame::new_unchecked(&mut buf[..]);
        w.set_dst_addr(f.dst_addr());
        w.set_src_addr(f.src_addr());
        w.set_ethertype(ETHERTYPE_IPV6);
        w.payload_mut().copy_from_slice(&[0x60, 0x00]);
        assert_eq!(buf, FRAME);
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]), Err(Truncated { header: "Ethernet", len: 13, need: 14 }));
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
}
