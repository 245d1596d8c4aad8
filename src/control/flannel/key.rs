//! Lease key names: the last component of `<prefix>/subnets/<name>`, as
//! flanneld writes them (`pkg/subnet/subnet.go`: `MakeSubnetKey`) and
//! reads them (`ParseSubnetKey`): `10.5.52.0-24` for an IPv4-only lease,
//! `10.5.52.0-24&fc00::-64` for a dual-stack one. Pure: no I/O.

use crate::route::Prefix;

/// Parses a lease key's last component, `10.5.52.0-24` or
/// `10.5.52.0-24&fc00::-64`. Every name flanneld writes parses; some that
/// flanneld's pattern would also take do not: host bits set (flanneld
/// keeps `10.5.52.1-24` unmasked), anything before the address, IPv6 in
/// dotted form.
pub fn parse_lease_name(name: &str) -> Result<(Prefix, Option<Prefix>), String> {
    let (v4, v6) = match name.split_once('&') {
        Some((a, b)) => (a, Some(b)),
        None => (name, None),
    };
    let one = |part: &str, want_v4: bool| -> Result<Prefix, String> {
        let (addr, len) = part.rsplit_once('-').ok_or_else(|| format!("key name {name:?} is not ADDRESS-LENGTH"))?;
        let p: Prefix = format!("{addr}/{len}").parse().map_err(|e| format!("key name {name:?}: {e}"))?;
        if p.is_ipv4() != want_v4 {
            return Err(format!("key name {name:?}: wrong address family"));
        }
        Ok(p)
    };
    let v4 = one(v4, true)?;
    let v6 = v6.map(|p| one(p, false)).transpose()?;
    Ok((v4, v6))
}

/// The key name of a lease on `subnet` and, dual-stack, `subnet6`
/// (`10.5.52.0-24`, `10.5.52.0-24&fc00::-64`), byte for byte as
/// `MakeSubnetKey` writes it. Go writes an IPv6 address as RFC 5952 text
/// (lowercase, the first longest run of two or more zero groups as `::`),
/// as Rust's `Ipv6Addr` does, except in `::ffff:0:0/96` and below 2^32,
/// which Go writes in dotted form: networks there are refused when the
/// config is read ([`super::NetworkConfig::parse`]).
pub fn lease_name(subnet: &Prefix, subnet6: Option<&Prefix>) -> String {
    let v4 = format!("{}-{}", subnet.network(), subnet.len());
    match subnet6 {
        Some(s6) => format!("{v4}&{}-{}", s6.network(), s6.len()),
        None => v4,
    }
}
