//! Cryptokey routing's ingress rule (whitepaper §2): a decrypted packet is
//! accepted only when its inner source address lies in a subnet of the
//! peer whose session decrypted it. The subnet table is the caller's (in
//! encapd, the route table); this module reads the inner packet out of
//! the padded plaintext and compares identities.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DropReason;
use super::keys::PublicKey;

/// The inner packet of a decrypted transport message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    /// The packet's own length (its header's length field): the padding
    /// behind it is not part of it.
    pub len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Reads the IP header at the start of `plaintext` (a packet followed by
/// up to 15 bytes of zero padding): version 4 or 6, a length field that
/// covers at least the fixed header and at most the bytes present. The
/// rest of the header is the caller's ingress filter's to check.
pub fn inner_packet(plaintext: &[u8]) -> Result<InnerPacket, DropReason> {
    match plaintext.first().map(|b| b >> 4) {
        Some(4) if plaintext.len() >= 20 => {
            let len = usize::from(u16::from_be_bytes([plaintext[2], plaintext[3]]));
            if len < 20 || len > plaintext.len() {
                return Err(DropReason::NotIp);
            }
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(plaintext[at], plaintext[at + 1], plaintext[at + 2], plaintext[at + 3]));
            Ok(InnerPacket { len, src: ip(12), dst: ip(16) })
        }
        Some(6) if plaintext.len() >= 40 => {
            let len = 40 + usize::from(u16::from_be_bytes([plaintext[4], plaintext[5]]));
            if len > plaintext.len() {
                return Err(DropReason::NotIp);
            }
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&plaintext[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(InnerPacket { len, src: ip(8), dst: ip(24) })
        }
        _ => Err(DropReason::NotIp),
    }
}

/// The cryptokey routing check: the packet came from `sender` (the
/// session's peer); `owner_of` is the caller's subnet table, answering who
/// owns an address (`None`: nobody). Accepted only when the owner of the
/// packet's source is the sender.
#[inline]
pub fn check_source(
    packet: &InnerPacket,
    sender: &PublicKey,
    owner_of: impl FnOnce(IpAddr) -> Option<PublicKey>,
) -> Result<(), DropReason> {
    if owner_of(packet.src).as_ref() == Some(sender) { Ok(()) } else { Err(DropReason::SpoofedSource) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], len: u16, padding: usize) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(len) + padding];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&[100, 96, 1, 2]);
        p
    }

    #[test]
    fn padding_is_cut_off_and_addresses_read() {
        let p = ipv4([100, 96, 2, 3], 33, 15);
        let inner = inner_packet(&p).unwrap();
        assert_eq!(inner, InnerPacket { len: 33, src: "100.96.2.3".parse().unwrap(), dst: "100.96.1.2".parse().unwrap() });
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 4;
        v6[8..24].copy_from_slice(&"fd00:96:2::3".parse::<Ipv6Addr>().unwrap().octets());
        let inner = inner_packet(&v6).unwrap();
        assert_eq!((inner.len, inner.src), (44, "fd00:96:2::3".parse().unwrap()));
    }

    #[test]
    fn what_is_not_one_packet_is_refused() {
        assert_eq!(inner_packet(&[]), Err(DropReason::NotIp));
        assert_eq!(inner_packet(&[0x45; 19]), Err(DropReason::NotIp));
        assert_eq!(inner_packet(&[0x55; 40]), Err(DropReason::NotIp));
        let mut p = ipv4([1, 2, 3, 4], 40, 0);
        p[2..4].copy_from_slice(&41u16.to_be_bytes());
        assert_eq!(inner_packet(&p), Err(DropReason::NotIp), "longer than the plaintext");
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(inner_packet(&p), Err(DropReason::NotIp), "shorter than a header");
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[5] = 1;
        assert_eq!(inner_packet(&v6), Err(DropReason::NotIp));
    }

    #[test]
    fn only_the_owner_may_send_from_its_subnet() {
        let p = inner_packet(&ipv4([100, 96, 2, 3], 20, 0)).unwrap();
        let b = PublicKey::from_bytes([2; 32]);
        let c = PublicKey::from_bytes([3; 32]);
        let table = |ip: IpAddr| (ip == "100.96.2.3".parse::<IpAddr>().unwrap()).then_some(b);
        assert_eq!(check_source(&p, &b, table), Ok(()));
        assert_eq!(check_source(&p, &c, table), Err(DropReason::SpoofedSource));
        let other = inner_packet(&ipv4([100, 96, 9, 9], 20, 0)).unwrap();
        assert_eq!(check_source(&other, &b, table), Err(DropReason::SpoofedSource));
    }
}
