//! The kernel path (`[dataplane] kernel_path = "tc"` or `"auto"`):
//! flannel's udp or vxlan encapsulation done by two eBPF programs on the
//! kernel's traffic-control hooks, so that a packet between two pods
//! crosses no user-space worker. The programs are C
//! (`bpf/encapd.bpf.c`, why: docs/kernel-path-source.md), compiled by
//! `build.rs` and loaded with aya ([`object`]); what they carry and what
//! they leave to the workers is in docs/kernel-path.md.
//!
//! The promise: a packet the programs take comes out exactly as the
//! workers would have sent or written it; everything else goes on,
//! unchanged, to the TUN or the socket and the workers. The differential
//! test (`tests/kernel_differential.rs`) runs both programs and the
//! forwarding core on the same generated packets and holds them to it.
//!
//! [`KernelPath::attach`] loads the programs (the verifier checks them),
//! creates the maps and attaches the programs through TCX links: `encap`
//! on the TUN's egress, `decap` on the ingress of the interface holding
//! `public_ip`. The links are fds of this process, so the programs go away
//! with it however it ends. A successor adopts them instead
//! ([`KernelPath::adopt`], from the fds [`KernelPath::handover_fds`] gives
//! it): it needs no privilege for that, so a predecessor that dropped its
//! capabilities can still hand the kernel path on. [`RouteSync`] keeps
//! the routes maps equal to the published subnet table.

pub mod maps;
pub mod object;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};

use aya::maps::{Map, MapData, PerCpuArray};

pub use maps::{RouteMaps, RouteSync};

pub use crate::config::XdpDecapMode;
use crate::sys::bpf::{self, TcxHook};

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
    /// Bytes added in front of the inner packet: outer IPv4 + UDP, and for
    /// vxlan the VXLAN and inner Ethernet headers (the outer Ethernet
    /// header not counted).
    pub const fn outer_len(self) -> usize {
        match self {
            Format::FlannelUdp => 28,
            Format::Vxlan { .. } => 28 + crate::wire::vxlan::HEADER_LEN,
        }
    }
}

/// The counters the programs keep, by index in the counters map
/// (`enum counter_slot` in `bpf/encapd.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Packets encapsulated and sent to a peer.
    Encapsulated = 0,
    /// Datagrams decapsulated and delivered to the TUN.
    Decapsulated = 1,
    /// Packets dropped because the kernel refused a step after `encap` had
    /// begun to change them.
    EncapFailed = 2,
    /// Packets handed to the workers: no underlay route to the peer.
    EncapNoRoute = 3,
    /// Packets handed to the workers: the next hop's neighbour unresolved.
    EncapNoNeighbour = 4,
    /// Packets handed to the workers: larger than the route's MTU.
    EncapFragNeeded = 5,
    /// Of [`Decapsulated`](Self::Decapsulated): by `xdp_decap`, before GRO.
    XdpDecapsulated = 6,
    /// Packets `decap` delivered to the TUN from `xdp_decap`'s datagrams,
    /// after GRO merged them.
    XdpDelivered = 7,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::Encapsulated,
        Counter::Decapsulated,
        Counter::EncapFailed,
        Counter::EncapNoRoute,
        Counter::EncapNoNeighbour,
        Counter::EncapFragNeeded,
        Counter::XdpDecapsulated,
        Counter::XdpDelivered,
    ];
}

/// What the kernel path needs to know about the node.
#[derive(Debug, Clone)]
pub struct KernelPathSpec {
    pub public_ip: Ipv4Addr,
    pub port: u16,
    /// The node's subnets.
    pub own4: (Ipv4Addr, u8),
    pub own6: Option<(Ipv6Addr, u8)>,
    /// The largest inner packet one datagram carries (`NodeScope::max_inner`).
    pub max_inner: u32,
    /// The TUN device's name (it must exist).
    pub tun: String,
    /// The backend's wire format.
    pub format: Format,
    /// Whether `xdp_decap` is attached in front of GRO.
    pub xdp: XdpDecapMode,
}

/// Why the kernel path could not be attached; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("finding the interface of public_ip {ip}: {source}")]
    Underlay { ip: Ipv4Addr, source: std::io::Error },
    #[error("no interface holds public_ip {0}")]
    NoUnderlay(Ipv4Addr),
    #[error("interface {name}: {source}")]
    Ifindex { name: String, source: std::io::Error },
    #[error("{0} (loading needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root)")]
    Load(#[from] object::LoadError),
    #[error("the object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error("attaching {program} to {interface} {hook}: {source} (TCX needs Linux 6.6 and CAP_NET_ADMIN)")]
    Attach { program: &'static str, interface: String, hook: &'static str, source: std::io::Error },
    #[error("duplicating a descriptor: {0}")]
    Dup(std::io::Error),
}

/// The fds a successor needs to carry on with an attached kernel path: the
/// two TCX links (which hold the programs), the routes maps, the
/// counters map, and the XDP link when `xdp_decap` is attached. Map
/// updates and reads through an fd need no privilege
/// (Linux 6.5 and later check capabilities when a map or program is
/// created, not when it is used).
#[derive(Debug)]
pub struct KernelFds {
    /// First, so dropped first: `decap` delivers `xdp_decap`'s packets.
    pub xdp: Option<OwnedFd>,
    pub links: [OwnedFd; 2],
    pub routes4: OwnedFd,
    pub routes6: OwnedFd,
    pub counters: OwnedFd,
}

impl KernelFds {
    /// In the order the handover protocol sends them (the XDP link last,
    /// so that a successor that takes five takes the rest unchanged).
    pub fn into_vec(self) -> Vec<OwnedFd> {
        let [a, b] = self.links;
        let mut fds = vec![a, b, self.routes4, self.routes6, self.counters];
        fds.extend(self.xdp);
        fds
    }

    /// The inverse of [`into_vec`](Self::into_vec); `None` unless five or six.
    pub fn from_vec(mut fds: Vec<OwnedFd>) -> Option<KernelFds> {
        let xdp = if fds.len() == 6 { fds.pop() } else { None };
        let [a, b, routes4, routes6, counters]: [OwnedFd; 5] = fds.try_into().ok()?;
        Some(KernelFds { links: [a, b], routes4, routes6, counters, xdp })
    }
}

/// The attached programs and their maps. Dropping it closes this process's
/// links: once no process holds them, the programs detach and packets go
/// through the workers again.
pub struct KernelPath {
    /// Declared (so dropped) before the TCX links: `xdp_decap`'s packets
    /// need `decap` to deliver them, so it detaches first.
    xdp: Option<OwnedFd>,
    links: [OwnedFd; 2],
    counters: PerCpuArray<MapData, [u64; 2]>,
    routes: Option<RouteMaps>,
    /// The interface `decap` is attached to ("" when adopted).
    pub underlay: String,
    /// Where `xdp_decap` is, or why it is not attached (for the log).
    pub xdp_status: String,
    port: u16,
    format: Format,
}

/// Totals of one [`Counter`] over every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

fn map_of(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Map, AttachError> {
    ebpf.take_map(name).ok_or(AttachError::MissingMap(name))
}

impl KernelPath {
    /// Loads and attaches both programs. Every error names the step.
    pub fn attach(spec: &KernelPathSpec) -> Result<KernelPath, AttachError> {
        let underlay = crate::sys::netdev::interface_with_address(IpAddr::V4(spec.public_ip))
            .map_err(|source| AttachError::Underlay { ip: spec.public_ip, source })?
            .ok_or(AttachError::NoUnderlay(spec.public_ip))?;
        let ifindex = |name: &str| bpf::ifindex(name).map_err(|source| AttachError::Ifindex { name: name.to_owned(), source });
        let underlay_ifindex = ifindex(&underlay)?;
        let tun_ifindex = ifindex(&spec.tun)?;
        // Not an Ethernet device: xdp_decap, which writes an Ethernet
        // header, is not attached (below); the TC programs need no MAC.
        let underlay_mac = crate::sys::netdev::interface_mac(&underlay);
        let mut ebpf = object::load(&object::ProgramConfig {
            local: spec.public_ip,
            port: spec.port,
            underlay_ifindex,
            tun_ifindex,
            own4: spec.own4,
            own6: spec.own6,
            max_inner: spec.max_inner,
            format: spec.format,
            egress_l2_len: 0,
            underlay_mac: *underlay_mac.as_ref().unwrap_or(&[0; 6]),
            xdp_mark: object::xdp_mark(),
        })?;
        let routes = RouteMaps::new(map_of(&mut ebpf, maps::ROUTES4)?, map_of(&mut ebpf, maps::ROUTES6)?)
            .map_err(|source| AttachError::Map { name: "routes", source })?;
        let counters = PerCpuArray::try_from(map_of(&mut ebpf, maps::COUNTERS)?)
            .map_err(|source| AttachError::Map { name: maps::COUNTERS, source })?;
        let attach = |program: &'static str, ifindex: u32, interface: &str, hook: TcxHook| -> Result<OwnedFd, AttachError> {
            let err = |source| AttachError::Attach { program, interface: interface.to_owned(), hook: hook.name(), source };
            let fd = object::program(&ebpf, program)?.fd().map_err(|e| err(std::io::Error::other(e.to_string())))?;
            bpf::attach_tcx(fd.as_fd(), ifindex, hook).map_err(err)
        };
        // Decapsulation first: a peer's datagrams are taken in the kernel
        // before this node starts sending them from the kernel.
        let ingress = attach(object::DECAP, underlay_ifindex, &underlay, TcxHook::Ingress)?;
        let egress = attach(object::ENCAP, tun_ifindex, &spec.tun, TcxHook::Egress)?;
        // After decap, which delivers what it decapsulates.
        let (xdp, xdp_status) = match underlay_mac {
            Ok(_) => attach_xdp(&ebpf, spec.xdp, &underlay, underlay_ifindex),
            Err(e) => (None, format!("no xdp_decap: {underlay} has no Ethernet address ({e})")),
        };
        // The programs' fds close with `ebpf`; the links hold the programs.
        Ok(KernelPath {
            xdp,
            links: [ingress, egress],
            counters,
            routes: Some(routes),
            underlay,
            xdp_status,
            port: spec.port,
            format: spec.format,
        })
    }

    /// Carries on with a predecessor's kernel path from its fds
    /// ([`handover_fds`](Self::handover_fds)); the routes maps keep what
    /// they hold until [`RouteSync`] applies the next table.
    pub fn adopt(fds: KernelFds, port: u16, format: Format) -> Result<KernelPath, AttachError> {
        let map = |fd: OwnedFd, name: &'static str| -> Result<Map, AttachError> {
            let data = MapData::from_fd(fd).map_err(|source| AttachError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| AttachError::Map { name, source })
        };
        let routes = RouteMaps::new(map(fds.routes4, maps::ROUTES4)?, map(fds.routes6, maps::ROUTES6)?)
            .map_err(|source| AttachError::Map { name: "routes", source })?;
        let counters = PerCpuArray::try_from(map(fds.counters, maps::COUNTERS)?)
            .map_err(|source| AttachError::Map { name: maps::COUNTERS, source })?;
        let xdp_status = if fds.xdp.is_some() { "xdp_decap carried on" } else { "no xdp_decap handed over" }.to_owned();
        Ok(KernelPath { xdp: fds.xdp, links: fds.links, counters, routes: Some(routes), underlay: String::new(), xdp_status, port, format })
    }

    /// Duplicates of every fd a successor needs ([`adopt`](Self::adopt)).
    pub fn handover_fds(&self) -> Result<KernelFds, AttachError> {
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(AttachError::Dup);
        let routes = self
            .routes
            .as_ref()
            .map(RouteMaps::fds)
            .ok_or_else(|| AttachError::Dup(std::io::Error::other("the routes maps went to the route writer")));
        let [routes4, routes6] = match routes {
            Ok(r) => r.map_err(AttachError::Dup)?,
            Err(e) => return Err(e),
        };
        let counters = aya::maps::IterableMap::map(&self.counters).fd().as_fd().try_clone_to_owned().map_err(AttachError::Dup)?;
        let xdp = self.xdp.as_ref().map(dup).transpose()?;
        Ok(KernelFds { links: [dup(&self.links[0])?, dup(&self.links[1])?], routes4, routes6, counters, xdp })
    }

    /// The writer for the routes maps, for the control thread. `adopted`:
    /// the maps hold a predecessor's routes. `None` after the first call.
    pub fn route_sync(&mut self, adopted: bool) -> Option<RouteSync> {
        let maps = self.routes.take()?;
        Some(if adopted { RouteSync::adopt(maps, self.port, self.format) } else { RouteSync::new(maps, self.port, self.format) })
    }

    /// One counter summed over every CPU; zero if the map cannot be read.
    pub fn counter(&self, c: Counter) -> CounterValue {
        let Ok(values) = self.counters.get(&(c as u32), 0) else { return CounterValue::default() };
        values.iter().fold(CounterValue::default(), |acc, v| CounterValue { packets: acc.packets + v[0], bytes: acc.bytes + v[1] })
    }

    /// All counters, as the metrics endpoint shows them, with the route
    /// writer's failures.
    pub fn totals(&self, route_update_failures: u64) -> crate::stats::exposition::KernelPathTotals {
        let e = self.counter(Counter::Encapsulated);
        let d = self.counter(Counter::Decapsulated);
        crate::stats::exposition::KernelPathTotals {
            egress_packets: e.packets,
            egress_bytes: e.bytes,
            ingress_packets: d.packets,
            ingress_bytes: d.bytes,
            encap_failed: self.counter(Counter::EncapFailed).packets,
            encap_no_route: self.counter(Counter::EncapNoRoute).packets,
            encap_no_neighbour: self.counter(Counter::EncapNoNeighbour).packets,
            encap_too_big: self.counter(Counter::EncapFragNeeded).packets,
            route_update_failures,
            xdp_decap_packets: self.counter(Counter::XdpDecapsulated).packets,
            xdp_delivered_packets: self.counter(Counter::XdpDelivered).packets,
        }
    }

    /// One line for the counters summary.
    pub fn summary_line(&self, route_update_failures: u64) -> String {
        let t = self.totals(route_update_failures);
        format!(
            "  kernel    egress {} pkts {} bytes | ingress {} pkts {} bytes (xdp: {} datagrams, {} after GRO) | encap failed {} (to workers: no route {}, no neighbour {}, too big {}) | route updates failed {}\n",
            t.egress_packets,
            t.egress_bytes,
            t.ingress_packets,
            t.ingress_bytes,
            t.xdp_decap_packets,
            t.xdp_delivered_packets,
            t.encap_failed,
            t.encap_no_route,
            t.encap_no_neighbour,
            t.encap_too_big,
            t.route_update_failures
        )
    }
}

/// Attaches `xdp_decap` to the underlay as `mode` asks: its link, or none,
/// and a phrase for the log saying which and why.
fn attach_xdp(ebpf: &aya::Ebpf, mode: XdpDecapMode, underlay: &str, ifindex: u32) -> (Option<OwnedFd>, String) {
    match mode {
        XdpDecapMode::Off => return (None, "no xdp_decap (xdp_decap = \"off\")".into()),
        XdpDecapMode::On => {}
        // GRO off: nothing merges the frames (and a veth with GRO off
        // hands its peer's TSO packets over whole, which decap takes as
        // they are; native XDP on a veth would take the peer's TSO away).
        XdpDecapMode::Auto => match crate::sys::netdev::interface_gro(underlay) {
            Ok(true) => {}
            Ok(false) => return (None, format!("no xdp_decap: GRO is off on {underlay}, so decapsulating before it gains nothing")),
            Err(e) => return (None, format!("no xdp_decap: cannot read {underlay}'s GRO setting ({e})")),
        },
    }
    let fd = match object::xdp_program(ebpf).map_err(|e| e.to_string()).and_then(|p| p.fd().map_err(|e| e.to_string())) {
        Ok(fd) => fd,
        Err(e) => return (None, format!("no xdp_decap: {e}")),
    };
    match bpf::attach_xdp_native(fd.as_fd(), ifindex) {
        Ok(link) => (Some(link), format!("xdp_decap on {underlay} before GRO")),
        Err(e) => {
            log::warn!(
                "kernel path: xdp_decap not attached to {underlay} ({e}; it needs the driver's native XDP and no other XDP program there): decap alone takes the underlay's datagrams, after GRO"
            );
            (None, format!("no xdp_decap: native XDP refused on {underlay} ({e})"))
        }
    }
}

/// The oldest kernel with TCX links, which the programs are attached with.
pub const MIN_KERNEL: (u32, u32) = (6, 6);

/// Whether this host can run the kernel path, without attaching anything
/// (`encapd check`): the kernel's version, then the programs through the
/// verifier. `Ok` says what was checked; `Err` why it cannot run.
pub fn probe(format: Format) -> Result<String, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|e| format!("reading the kernel version: {e}"))?;
    let release = release.trim();
    let version = parse_release(release).ok_or_else(|| format!("cannot read the kernel version {release:?}"))?;
    if version < MIN_KERNEL {
        return Err(format!("Linux {release} has no TCX links (Linux {}.{} or later)", MIN_KERNEL.0, MIN_KERNEL.1));
    }
    let cfg = object::ProgramConfig {
        local: Ipv4Addr::new(192, 0, 2, 1),
        port: 8285,
        underlay_ifindex: 1,
        tun_ifindex: 1,
        own4: (Ipv4Addr::new(100, 96, 1, 0), 24),
        own6: None,
        max_inner: 1472,
        format,
        egress_l2_len: 0,
        underlay_mac: [0x02, 0, 0, 0, 0, 1],
        xdp_mark: object::xdp_mark(),
    };
    object::load(&cfg).map_err(|e| format!("{e} (loading needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root)"))?;
    Ok(format!("Linux {release}, the verifier accepts the three programs"))
}

/// `major.minor` of a kernel release such as `6.18.44-fc-v1300`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a test that needs CAP_BPF may run: true as root; false (a
    /// skip, with a message) otherwise, unless ENCAPD_REQUIRE_ROOT_TESTS=1,
    /// which makes the skip a failure.
    fn privileged(test: &str) -> bool {
        // CAP_SYS_ADMIN (21) or CAP_BPF (39) in the effective set.
        let caps = crate::sys::privileges::current_caps().map(|c| c.effective).unwrap_or(0);
        if caps & (1 << 21 | 1 << 39) != 0 {
            return true;
        }
        assert!(std::env::var("ENCAPD_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"), "{test}: needs root, and ENCAPD_REQUIRE_ROOT_TESTS=1");
        eprintln!("{test}: skipped (needs root for the verifier)");
        false
    }

    fn config(format: Format) -> object::ProgramConfig {
        object::ProgramConfig {
            local: Ipv4Addr::new(198, 18, 0, 1),
            port: 8285,
            underlay_ifindex: 1,
            tun_ifindex: 1,
            own4: (Ipv4Addr::new(100, 96, 1, 0), 24),
            own6: Some(("fd00:96:1::".parse().unwrap(), 64)),
            max_inner: 1472,
            format,
            egress_l2_len: 0,
            underlay_mac: [0x02, 0x11, 0, 0, 0, 1],
            xdp_mark: object::xdp_mark(),
        }
    }

    /// Five fds (a predecessor without the XDP link) or six come back as
    /// they were sent; any other count is refused.
    #[test]
    fn kernel_fds_travel_with_and_without_the_xdp_link() {
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let five: Vec<OwnedFd> = (0..5).map(|_| fd()).collect();
        let k = KernelFds::from_vec(five).expect("five fds");
        assert!(k.xdp.is_none());
        assert_eq!(k.into_vec().len(), 5);
        let six: Vec<OwnedFd> = (0..6).map(|_| fd()).collect();
        let last = std::os::fd::AsRawFd::as_raw_fd(&six[5]);
        let k = KernelFds::from_vec(six).expect("six fds");
        assert_eq!(k.xdp.as_ref().map(std::os::fd::AsRawFd::as_raw_fd), Some(last), "the sixth is the XDP link");
        let back = k.into_vec();
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&back[5]), last, "sent last again");
        assert!(KernelFds::from_vec((0..4).map(|_| fd()).collect()).is_none());
        assert!(KernelFds::from_vec((0..7).map(|_| fd()).collect()).is_none());
    }

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert!(parse_release("6.1.0") < Some(MIN_KERNEL));
        assert_eq!(parse_release("x"), None);
    }

    /// Both programs pass the kernel's verifier with every setting that
    /// prunes a different set of branches (the check every start makes),
    /// and the counters read back as zero.
    #[test]
    fn the_verifier_accepts_both_programs_in_both_formats() {
        if !privileged("the_verifier_accepts_both_programs_in_both_formats") {
            return;
        }
        for format in [Format::FlannelUdp, Format::Vxlan { vni: 1, mac: [0x02, 0, 198, 18, 0, 1] }] {
            for own6 in [true, false] {
                let mut cfg = config(format);
                if !own6 {
                    cfg.own6 = None;
                }
                let mut ebpf = object::load(&cfg).unwrap_or_else(|e| panic!("{format:?}, own6 {own6}: {e}"));
                let counters: PerCpuArray<MapData, [u64; 2]> = PerCpuArray::try_from(ebpf.take_map(maps::COUNTERS).unwrap()).unwrap();
                for c in Counter::ALL {
                    assert!(counters.get(&(c as u32), 0).unwrap().iter().all(|v| *v == [0, 0]));
                }
            }
        }
    }
}
