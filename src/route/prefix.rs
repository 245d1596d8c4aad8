//! An IPv4 or IPv6 prefix (`100.96.1.0/24`, `fd00:96::/48`) with strict
//! parsing: host bits must be zero, so a typo never silently widens a route.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network prefix; the address has no bits set beyond `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not a prefix of the form ADDRESS/LENGTH")]
    Syntax(String),
    #[error("{0:?} has an invalid address")]
    Address(String),
    #[error("{0:?} has a prefix length beyond the address size")]
    Length(String),
    #[error("{given:?} has host bits set (did you mean {suggest}?)")]
    HostBits { given: String, suggest: Prefix },
}

pub(crate) fn mask_v4(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

pub(crate) fn mask_v6(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) }
}

impl Prefix {
    /// The prefix of length `len` containing `addr` (host bits cleared).
    pub fn containing(addr: IpAddr, len: u8) -> Option<Prefix> {
        match addr {
            IpAddr::V4(a) if len <= 32 => Some(Prefix::V4 { addr: u32::from(a) & mask_v4(len), len }),
            IpAddr::V6(a) if len <= 128 => Some(Prefix::V6 { addr: u128::from(a) & mask_v6(len), len }),
            _ => None,
        }
    }

    #[allow(clippy::len_without_is_empty)] // a prefix length, not a container size
    pub fn len(&self) -> u8 {
        match *self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self, Prefix::V4 { .. })
    }

    /// The network address, e.g. `100.96.1.0` for `100.96.1.0/24`.
    pub fn network(&self) -> IpAddr {
        match *self {
            Prefix::V4 { addr, .. } => IpAddr::from(addr.to_be_bytes()),
            Prefix::V6 { addr, .. } => IpAddr::from(addr.to_be_bytes()),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Prefix::V4 { addr, len }, IpAddr::V4(ip)) => u32::from(ip) & mask_v4(len) == addr,
            (Prefix::V6 { addr, len }, IpAddr::V6(ip)) => u128::from(ip) & mask_v6(len) == addr,
            _ => false,
        }
    }

    /// True when `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len() >= self.len() && self.contains(other.network())
    }

    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| PrefixError::Syntax(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::Address(s.to_owned()))?;
        let len: u8 = len.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let prefix = Prefix::containing(addr, len).ok_or_else(|| PrefixError::Length(s.to_owned()))?;
        if prefix.network() != addr {
            return Err(PrefixError::HostBits { given: s.to_owned(), suggest: prefix });
        }
        Ok(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["100.96.1.0/24", "0.0.0.0/0", "10.1.2.3/32", "fd00:96::/48", "::/0"] {
            assert_eq!(s.parse::<Prefix>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!("100.96.1.0".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
        assert!(matches!("100.96.1.0/x".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
        assert!(matches!("100.96.1/24".parse::<Prefix>(), Err(PrefixError::Address(_))));
        assert!(matches!("100.96.1.0/33".parse::<Prefix>(), Err(PrefixError::Length(_))));
        assert!(matches!("fd00::/129".parse::<Prefix>(), Err(PrefixError::Length(_))));
        let err = "100.96.1.5/24".parse::<Prefix>().unwrap_err();
        assert_eq!(err.to_string(), "\"100.96.1.5/24\" has host bits set (did you mean 100.96.1.0/24?)");
    }

    #[test]
    fn containment() {
        let net: Prefix = "100.96.0.0/16".parse().unwrap();
        let sub: Prefix = "100.96.1.0/24".parse().unwrap();
        let other: Prefix = "100.97.0.0/24".parse().unwrap();
        assert!(net.covers(&sub) && !sub.covers(&net));
        assert!(net.overlaps(&sub) && sub.overlaps(&net) && !net.overlaps(&other));
        assert!(sub.contains("100.96.1.255".parse().unwrap()));
        assert!(!sub.contains("100.96.2.0".parse().unwrap()));
        assert!(!sub.contains("::1".parse().unwrap()));
        let v6: Prefix = "fd00:96::/32".parse().unwrap();
        assert!(v6.contains("fd00:96:1::5".parse().unwrap()));
        assert!(!v6.overlaps(&net));
    }
}
