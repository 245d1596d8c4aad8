//! flannel's vxlan backend, as a Linux kernel VTEP (`flannel.1`: VNI 1,
//! port 8472, `nolearning`, static FDB and neighbour entries) speaks it:
//! every inner packet goes behind a VXLAN header with our VNI and an
//! Ethernet header from our VTEP MAC to the peer's (a kernel VTEP silently
//! drops a frame for another MAC). On receive, only our VNI and our MAC are
//! accepted — broadcast only for ARP, which a VTEP that lost its static
//! neighbour entry sends, and which is answered with our MAC.

use super::{EncapHeader, Unwrapped, WireFormat};
use crate::route::Route;
use crate::stats::DropReason;
use crate::wire::arp::{self, ARP_LEN, Arp};
use crate::wire::vxlan::{self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame, HEADER_LEN, Mac};

/// This node's VTEP.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan {
    pub vni: u32,
    pub mac: Mac,
}

impl WireFormat for Vxlan {
    const HEADER_LEN: usize = HEADER_LEN;
    const PARTIAL_CHECKSUMS: bool = true;

    #[inline]
    fn header(&self, route: &Route) -> EncapHeader {
        // The sources only admit vxlan peers with a MAC; an all-zero MAC
        // would be dropped by the receiving VTEP, never mis-delivered.
        let dst = route.vtep_mac.unwrap_or_default();
        let ethertype = if route.subnet.is_ipv4() { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
        let mut h = [0u8; HEADER_LEN];
        vxlan::write_header(&mut h, &Frame { vni: self.vni, dst, src: self.mac, ethertype });
        EncapHeader::new(&h)
    }

    #[inline]
    fn unwrap(&self, datagram: &[u8]) -> Result<Unwrapped, DropReason> {
        let frame = vxlan::parse(datagram).map_err(|_| DropReason::BadVxlanHeader)?;
        if frame.vni != self.vni {
            return Err(DropReason::WrongVni);
        }
        match frame.ethertype {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 if frame.dst == self.mac => Ok(Unwrapped::Packet(HEADER_LEN..datagram.len())),
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Err(DropReason::WrongMac),
            ETHERTYPE_ARP if frame.dst == self.mac || frame.dst == BROADCAST => match arp::parse_arp(&datagram[HEADER_LEN..]) {
                Some(arp) if arp.request => Ok(Unwrapped::ArpRequest(arp)),
                _ => Err(DropReason::UnsupportedFrame),
            },
            ETHERTYPE_ARP => Err(DropReason::WrongMac),
            _ => Err(DropReason::UnsupportedFrame),
        }
    }

    fn arp_reply(&self, request: &Arp, out: &mut [u8]) -> Option<usize> {
        let (headers, rest) = out.get_mut(..HEADER_LEN + ARP_LEN)?.split_at_mut(HEADER_LEN);
        let headers: &mut [u8; HEADER_LEN] = headers.try_into().ok()?;
        vxlan::write_header(headers, &Frame { vni: self.vni, dst: request.sender_mac, src: self.mac, ethertype: ETHERTYPE_ARP });
        let reply = Arp {
            request: false,
            sender_mac: self.mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        };
        arp::write_arp(rest.try_into().ok()?, &reply);
        Some(HEADER_LEN + ARP_LEN)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::datapath::format::MAX_REPLY;

    fn me() -> Vxlan {
        Vxlan { vni: 1, mac: "02:00:c6:12:00:01".parse().unwrap() }
    }

    fn route(subnet: &str) -> Route {
        Route {
            subnet: subnet.parse().unwrap(),
            endpoint: "198.18.0.2:8472".parse().unwrap(),
            vtep_mac: Some("c6:d2:32:6f:8f:44".parse().unwrap()),
            kernel_decap: true,
            public_key: None,
        }
    }

    fn datagram(vni: u32, dst: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = [0u8; HEADER_LEN];
        vxlan::write_header(&mut h, &Frame { vni, dst, src: "c6:d2:32:6f:8f:44".parse().unwrap(), ethertype });
        let mut d = h.to_vec();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn the_header_names_the_peer_vtep_and_the_inner_family() {
        let h = me().header(&route("100.96.2.0/24"));
        let f = vxlan::parse(h.as_bytes()).unwrap();
        assert_eq!((f.vni, f.dst.to_string(), f.src, f.ethertype), (1, "c6:d2:32:6f:8f:44".to_owned(), me().mac, ETHERTYPE_IPV4));
        assert_eq!(vxlan::parse(me().header(&route("fd00:96:2::/64")).as_bytes()).unwrap().ethertype, ETHERTYPE_IPV6);
    }

    #[test]
    fn only_our_vni_and_mac_get_in() {
        let v = me();
        let ip = [0x45u8; 20];
        assert_eq!(v.unwrap(&datagram(1, v.mac, ETHERTYPE_IPV4, &ip)), Ok(Unwrapped::Packet(HEADER_LEN..HEADER_LEN + 20)));
        assert_eq!(v.unwrap(&datagram(2, v.mac, ETHERTYPE_IPV4, &ip)), Err(DropReason::WrongVni));
        assert_eq!(v.unwrap(&datagram(1, "02:00:00:00:00:09".parse().unwrap(), ETHERTYPE_IPV4, &ip)), Err(DropReason::WrongMac));
        assert_eq!(v.unwrap(&datagram(1, BROADCAST, ETHERTYPE_IPV4, &ip)), Err(DropReason::WrongMac), "broadcast is for ARP only");
        assert_eq!(v.unwrap(&datagram(1, v.mac, 0x88cc, &ip)), Err(DropReason::UnsupportedFrame));
        assert_eq!(v.unwrap(&datagram(1, v.mac, ETHERTYPE_IPV4, &[])[..21]), Err(DropReason::BadVxlanHeader));
    }

    #[test]
    fn arp_requests_are_answered_with_our_mac() {
        let v = me();
        let request = Arp {
            request: true,
            sender_mac: "c6:d2:32:6f:8f:44".parse().unwrap(),
            sender_ip: Ipv4Addr::new(100, 96, 2, 0),
            target_mac: Mac::default(),
            target_ip: Ipv4Addr::new(100, 96, 1, 0),
        };
        let mut arp = [0u8; ARP_LEN];
        arp::write_arp(&mut arp, &request);
        assert_eq!(v.unwrap(&datagram(1, BROADCAST, ETHERTYPE_ARP, &arp)), Ok(Unwrapped::ArpRequest(request)));
        let mut out = [0u8; MAX_REPLY];
        let n = v.arp_reply(&request, &mut out).unwrap();
        let f = vxlan::parse(&out[..n]).unwrap();
        assert_eq!((f.dst, f.src, f.ethertype), (request.sender_mac, v.mac, ETHERTYPE_ARP));
        let reply = arp::parse_arp(&out[HEADER_LEN..n]).unwrap();
        assert!(!reply.request);
        assert_eq!((reply.sender_mac, reply.sender_ip), (v.mac, request.target_ip));
        assert_eq!((reply.target_mac, reply.target_ip), (request.sender_mac, request.sender_ip));
        // A reply (or anything but a request) is not answered.
        let mut answer = [0u8; ARP_LEN];
        arp::write_arp(&mut answer, &reply);
        assert_eq!(v.unwrap(&datagram(1, v.mac, ETHERTYPE_ARP, &answer)), Err(DropReason::UnsupportedFrame));
    }
}
