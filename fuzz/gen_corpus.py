#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/.

Each seed is a small valid input in the format the target's doc comment
describes. Run from anywhere: python3 fuzz/gen_corpus.py (idempotent; it only
rewrites the seed-*.bin / seed-*.toml files it owns).
"""
import ipaddress
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def a4(s):
    return ipaddress.IPv4Address(s).packed


def a6(s):
    return ipaddress.IPv6Address(s).packed


def l4_fix(src: bytes, dst: bytes, proto: int, l4: bytearray, at: int) -> bytes:
    l4[at:at + 2] = b"\0\0"
    pseudo = src + dst + struct.pack("!IxxxB", len(l4), proto) if len(src) == 16 else src + dst + struct.pack("!xBH", proto, len(l4))
    c = csum(pseudo + bytes(l4))
    if proto == UDP and c == 0:
        c = 0xFFFF
    l4[at:at + 2] = struct.pack("!H", c)
    return bytes(l4)


def tcp(sport, dport, seq, flags, payload=b"", ack=77, opts=b"\x01\x01\x08\x0a\0\0\0\x09\0\0\0\x07"):
    doff = (20 + len(opts)) // 4
    return bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 512, 0, 0) + opts + payload)


def udp(sport, dport, payload=b""):
    return bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def ipv4(src, dst, proto, l4: bytearray, ttl=64, ident=0x1234, frag=0x4000, fix_l4=True, partial=False):
    s, d = a4(src), a4(dst)
    if fix_l4 and proto in (TCP, UDP):
        l4 = bytearray(l4_fix(s, d, proto, l4, 16 if proto == TCP else 6))
    if partial:  # NEEDS_CSUM: the field holds the folded pseudo-header sum
        at = 16 if proto == TCP else 6
        l4[at:at + 2] = struct.pack("!H", ~csum(s + d + struct.pack("!xBH", proto, len(l4))) & 0xFFFF)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0, s, d))
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + bytes(l4)


def ipv6(src, dst, proto, l4: bytearray, hop=64, fix_l4=True, partial=False):
    s, d = a6(src), a6(dst)
    if fix_l4 and proto in (TCP, UDP):
        l4 = bytearray(l4_fix(s, d, proto, l4, 16 if proto == TCP else 6))
    if proto == ICMPV6:
        l4 = bytearray(l4_fix(s, d, proto, l4, 2))
    if partial:
        at = 16 if proto == TCP else 6
        l4[at:at + 2] = struct.pack("!H", ~csum(s + d + struct.pack("!IxxxB", len(l4), proto)) & 0xFFFF)
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, hop, s, d) + bytes(l4)


def icmp4(typ, code, rest=b"\0\0\0\0", data=b"ping"):
    m = bytearray(struct.pack("!BBH", typ, code, 0) + rest + data)
    m[2:4] = struct.pack("!H", csum(bytes(m)))
    return m


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def rec(tag, body=b""):
    return bytes([tag]) + struct.pack("!H", len(body)) + body


def cont(mode, n=0):
    """offload_coalesce: next segment of the previous packet's flow."""
    return bytes([2 | (mode << 2)]) + struct.pack("!H", n)


PAY = bytes(range(256))


def seeds():
    v4u = ipv4("100.96.2.3", "100.96.1.2", UDP, udp(1234, 5678, b"hello, overlay"), ttl=63)
    v6u = ipv6("fd00:96:2::3", "fd00:96:1::2", UDP, udp(1234, 5678, b"hello, v6"), hop=63)
    v4t = ipv4("100.96.3.5", "100.96.1.9", TCP, tcp(40000, 80, 1000, 0x18, b"GET / HTTP/1.1\r\n\r\n"))
    yield "ingress", "v4-udp-from-b", bytes([0, 0]) + v4u
    yield "ingress", "v6-udp-from-b", bytes([0, 0]) + v6u
    yield "ingress", "v4-tcp-from-c", bytes([0, 4]) + v4t
    yield "ingress", "v4-spoofed-from-c", bytes([0, 4]) + v4u
    yield "ingress", "v4-unknown-sender", bytes([0, 6]) + a4("198.18.0.66") + v4u
    yield "ingress", "v6-wrong-destination", bytes([0, 0]) + ipv6("fd00:96:2::3", "fd00:96:3::2", UDP, udp(1, 2, b"x"))

    out4 = ipv4("100.96.1.2", "100.96.2.3", UDP, udp(1234, 5678, b"egress payload"))
    yield "egress", "v4-forward", bytes([0]) + out4
    yield "egress", "v6-forward", bytes([0]) + ipv6("fd00:96:1::2", "fd00:96:2::3", UDP, udp(1234, 5678, b"egress v6"))
    yield "egress", "v4-no-route", bytes([0]) + ipv4("100.96.1.2", "100.96.9.9", UDP, udp(1, 2, b"x"))
    yield "egress", "v4-ttl-1", bytes([0]) + ipv4("100.96.1.2", "100.96.3.3", UDP, udp(1, 2, b"x"), ttl=1)
    yield "egress", "v6-own-subnet", bytes([0]) + ipv6("fd00:96:1::2", "fd00:96:1::9", UDP, udp(1, 2, b"x"))
    yield "egress", "v4-too-big", bytes([0]) + ipv4("100.96.1.2", "100.96.2.3", UDP, udp(1, 2, PAY * 6))
    yield "egress", "v4-tcp-gso", bytes([4]) + ipv4("100.96.1.2", "100.96.2.3", TCP, tcp(40000, 5201, 1, 0x10, PAY * 8))
    yield "egress", "v6-multicast", bytes([0]) + ipv6("fe80::1", "ff02::16", UDP, udp(1, 2, b"mld"), hop=1)

    yield "icmp", "unreachable-v4-udp", bytes([0, 0, 0]) + out4
    yield "icmp", "too-big-v4", bytes([2]) + struct.pack("!H", 1472) + ipv4("100.96.1.2", "100.96.2.3", UDP, udp(1, 2, PAY * 4))
    yield "icmp", "time-exceeded-v6", bytes([1, 0, 0]) + ipv6("fd00:96:1::2", "fd00:96:2::3", UDP, udp(1, 2, PAY * 5), hop=1)
    yield "icmp", "too-big-v6", bytes([2]) + struct.pack("!H", 1452) + ipv6("fd00:96:1::2", "fd00:96:2::3", TCP, tcp(1, 2, 3, 0x10, PAY * 6))
    yield "icmp", "echo-request-v4", bytes([0, 0, 0]) + ipv4("100.96.1.2", "100.96.9.9", ICMP, icmp4(8, 0, b"\0\1\0\1"))
    yield "icmp", "icmp-error-v4", bytes([0, 0, 0]) + ipv4("100.96.1.2", "100.96.9.9", ICMP, icmp4(3, 1, data=out4[:28]))
    yield "icmp", "fragment-v4", bytes([1, 0, 0]) + ipv4("100.96.1.2", "100.96.9.9", UDP, udp(1, 2, b"frag"), frag=0x0010, fix_l4=False)
    yield "icmp", "icmpv6-echo", bytes([0, 0, 0]) + ipv6("fd00:96:1::2", "fd00:96:9::9", ICMPV6, bytearray(b"\x80\0\0\0\0\1\0\1ping"))

    yield "peers_file", "two-peers.toml", b"""# encapd peers
[[peer]]
subnet    = "100.96.2.0/24"
public_ip = "198.18.0.2"
subnet6   = "fd00:96:2::/64"

[[peer]]
subnet    = "100.96.3.0/24"
public_ip = "198.18.0.3"
port      = 9000
"""
    yield "peers_file", "empty-list.toml", b"peer = []\n"
    yield "peers_file", "inline.toml", b'peer = [{ subnet = "10.1.0.0/16", public_ip = "2001:db8::7", port = 1 }]\n'

    yield "config_file", "minimal.toml", b"""[node]
public_ip = "198.18.0.1"
subnet = "100.96.1.0/24"
[network]
cidr = "100.96.0.0/16"
[dataplane]
workers = 2
"""
    yield "config_file", "full.toml", b"""[node]
public_ip = "198.18.0.1"
subnet = "100.96.1.0/24"
subnet6 = "fd00:96:1::/64"

[network]
cidr = "100.96.0.0/16"
cidr6 = "fd00:96::/32"
backend = "udp"
port = 8285
underlay_mtu = 1500

[dataplane]
tun = "encap0"
workers = 2
io = "mmsg"
cpus = [0, 1]
batch = 32
socket_buffer = 4194304
offload = "off"

[control]
source = "file"
peers = "peers.toml"
"""
    yield "config_file", "ipv6-underlay.toml", b"""[node]
public_ip = "2001:db8::1"
subnet = "10.244.7.0/24"
[network]
cidr = "10.244.0.0/16"
underlay_mtu = 9000
[dataplane]
io = "classic"
workers = 1
[control]
peers = "/var/lib/encapd/peers.toml"
"""

    yield "config_file", "etcd.toml", b"""[node]
public_ip = "198.18.0.1"
[dataplane]
workers = 2
[control]
source = "etcd"
endpoints = ["http://198.18.0.10:2379", "http://198.18.0.11:2379"]
"""

    yield "config_file", "etcd-dual-stack.toml", b"""[node]
public_ip = "198.18.0.1"
subnet6 = "fd00:96:1::/64"
[network]
cidr6 = "fd00:96::/32"
[dataplane]
workers = 2
[control]
source = "etcd"
endpoints = ["http://198.18.0.10:2379"]
"""

    # etcd_lease: byte 0 = expectation (bit 0 vxlan, bits 1-2 VNI, bit 3 IPv6
    # underlay, bit 4 wide networks, bit 5 port 4789, bit 6 IPv4-only
    # network), key name, "\n", value.
    def lease(sel, name, value):
        return bytes([sel]) + name.encode() + b"\n" + value.encode()

    def vx(ip, mac, vni=1, decap=None):
        extra = "" if decap is None else f',"EncapdKernelDecap":{str(decap).lower()}'
        return f'{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"{extra}}}}}'

    udp_lease = '{"PublicIP":"198.18.0.2","PublicIPv6":null}'
    yield "etcd_lease", "flanneld-udp", lease(0x00, "100.96.2.0-24", udp_lease)
    yield "etcd_lease", "flanneld-vxlan", lease(0x01, "100.96.3.0-24", vx("198.18.0.3", "c6:d2:32:6f:8f:44"))
    yield "etcd_lease", "encapd-vxlan-decap", lease(0x01, "100.96.4.0-24", vx("198.18.0.4", "02:00:c6:12:00:04", decap=True))
    yield "etcd_lease", "encapd-vxlan-no-decap-dual", lease(0x01, "100.96.5.0-24&fd00:96:5::-64", vx("198.18.0.5", "02:00:c6:12:00:05", decap=False))
    yield "etcd_lease", "encapd-udp-decap", lease(0x20, "100.96.6.0-24",
                                                  '{"PublicIP":"198.18.0.6","PublicIPv6":null,"BackendType":"udp","BackendData":{"EncapdKernelDecap":true}}')
    yield "etcd_lease", "vxlan-vni-max-wide", lease(0x17, "10.7.0.0-16", vx("198.18.0.7", "02:00:c6:12:00:07", vni=16777215))
    yield "etcd_lease", "bad-decap-not-bool", lease(0x00, "100.96.8.0-24",
                                                    '{"PublicIP":"198.18.0.8","BackendType":"udp","BackendData":{"EncapdKernelDecap":"yes"}}')
    yield "etcd_lease", "bad-group-mac", lease(0x01, "100.96.9.0-24", vx("198.18.0.9", "ff:ff:ff:ff:ff:ff"))
    yield "etcd_lease", "bad-vni", lease(0x03, "100.96.9.0-24", vx("198.18.0.9", "02:00:c6:12:00:09"))
    yield "etcd_lease", "bad-own-subnet", lease(0x00, "100.96.1.128-25", udp_lease)
    yield "etcd_lease", "bad-outside-network", lease(0x00, "100.97.2.0-24", udp_lease)
    yield "etcd_lease", "bad-multicast-ip", lease(0x00, "100.96.2.0-24", '{"PublicIP":"224.0.0.1"}')
    yield "etcd_lease", "bad-ipv6-underlay", lease(0x08, "100.96.2.0-24", udp_lease)
    yield "etcd_lease", "other-backend", lease(0x00, "100.96.2.0-24", vx("198.18.0.2", "02:00:c6:12:00:02"))
    yield "etcd_lease", "host-gw", lease(0x01, "100.96.2.0-24", '{"PublicIP":"198.18.0.2","BackendType":"host-gw","BackendData":null}')
    # Dual stack, as flanneld writes it: the udp backend's lease in a
    # dual-stack network (PublicIP only, the key with its IPv6 subnet), the
    # vxlan backend's (PublicIPv6 and BackendV6Data of its second VTEP), and
    # the vxlan backend's in an IPv6-only network (PublicIP 0.0.0.0).
    vx6 = ('{"PublicIP":"198.18.0.3","PublicIPv6":"fd00:18::3","BackendType":"vxlan",'
           '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}')
    yield "etcd_lease", "flanneld-udp-dual", lease(0x00, "100.96.2.0-24&fd00:96:2::-64", udp_lease)
    yield "etcd_lease", "flanneld-vxlan-dual", lease(0x01, "100.96.3.0-24&fd00:96:3::-64", vx6)
    yield "etcd_lease", "flanneld-vxlan-ipv6-only", lease(0x01, "0.0.0.0-0&fd00:96:3::-64",
                                                          '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:18::3","BackendType":"vxlan",'
                                                          '"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}')
    yield "etcd_lease", "dual-key-ipv4-network", lease(0x40, "100.96.7.0-24&fd01::-64", udp_lease)
    yield "etcd_lease", "bad-v6-outside-network", lease(0x00, "100.96.2.0-24&fd01:96:2::-64", udp_lease)
    yield "etcd_lease", "bad-v6-own-subnet", lease(0x00, "100.96.2.0-24&fd00:96:1::-64", udp_lease)
    yield "etcd_lease", "bad-public-ipv6", lease(0x00, "100.96.2.0-24&fd00:96:2::-64", '{"PublicIP":"198.18.0.2","PublicIPv6":"198.18.0.2"}')
    yield "etcd_lease", "bad-backend-v6-data", lease(0x01, "100.96.3.0-24&fd00:96:3::-64",
                                                     vx6.replace('"VtepMAC":"c6:d2:32:6f:8f:46"', '"VtepMAC":"ff:d2:32:6f:8f:46"'))

    # offload_split: virtio header + packet, as the TUN reads it.
    t4 = ipv4("100.96.1.2", "100.96.2.3", TCP, tcp(40000, 5201, 7, 0x18, PAY * 11 + PAY[:200]), partial=True, fix_l4=False)
    yield "offload_split", "tcpv4-gso", vnet(1, 1, 52, 1000, 20, 16) + t4
    t6 = ipv6("fd00:96:1::2", "fd00:96:2::3", TCP, tcp(40000, 5201, 0xFFFFFF00, 0x99, PAY * 9), partial=True, fix_l4=False)
    yield "offload_split", "tcpv6-gso-ecn-cwr-fin", vnet(1, 0x84, 72, 1200, 40, 16) + t6
    u4 = ipv4("100.96.1.2", "100.96.2.3", UDP, udp(4000, 4001, PAY * 10), partial=True, fix_l4=False)
    yield "offload_split", "udpv4-uso", vnet(1, 5, 28, 1400, 20, 6) + u4
    u6 = ipv6("fd00:96:1::2", "fd00:96:2::3", UDP, udp(4000, 4001, PAY * 3), partial=True, fix_l4=False)
    yield "offload_split", "udpv6-uso", vnet(1, 5, 48, 300, 40, 6) + u6
    p4 = ipv4("100.96.1.2", "100.96.2.3", UDP, udp(4000, 4001, b"plain"), partial=True, fix_l4=False)
    yield "offload_split", "plain-needs-csum", vnet(1, 0, 0, 0, 20, 6) + p4
    yield "offload_split", "plain", vnet() + out4

    # offload_coalesce: flags, then records.
    first = ipv4("100.96.2.3", "100.96.1.2", TCP, tcp(5201, 40000, 1000, 0x10, PAY * 2))
    yield "offload_coalesce", "tcpv4-run", bytes([0]) + rec(0, first) + cont(0) + cont(0) + cont(1) + cont(0, 100)
    first6 = ipv6("fd00:96:2::3", "fd00:96:1::2", TCP, tcp(5201, 40000, 0xFFFFFFF0, 0x10, PAY * 3))
    yield "offload_coalesce", "tcpv6-run-gap", bytes([2]) + rec(0, first6) + cont(0) + cont(3) + cont(0) + cont(2, 50)
    u = ipv4("100.96.2.3", "100.96.1.2", UDP, udp(4000, 4001, PAY * 4))
    yield "offload_coalesce", "udpv4-run", bytes([1]) + rec(0, u) + cont(0) + cont(0) + cont(0, 10) + cont(0)
    other = ipv4("100.96.2.4", "100.96.1.2", TCP, tcp(5201, 40001, 5, 0x10, PAY))
    yield "offload_coalesce", "interleaved", bytes([4]) + rec(0, first) + rec(0, other) + bytes([3]) + cont(0) + rec(0, v4u)


def wg_records(*recs):
    """wg_responder: (mode, delay, bytes) records."""
    return b"".join(bytes([m, d]) + struct.pack("!H", len(b)) + b for m, d, b in recs)


def wg_seeds():
    init = bytes([1, 0, 0, 0]) + struct.pack("<I", 0x1234) + bytes(range(8, 148))
    resp = bytes([2, 0, 0, 0]) + struct.pack("<II", 0x0101, 0x1234) + bytes(range(12, 92))
    cookie = bytes([3, 0, 0, 0]) + struct.pack("<I", 0x1234) + bytes(range(8, 64))
    transport = bytes([4, 0, 0, 0]) + struct.pack("<IQ", 0x0101, 7) + bytes(range(16, 80))
    keepalive = bytes([4, 0, 0, 0]) + struct.pack("<IQ", 0x0101, 0) + bytes(16)
    yield "wg_messages", "initiation", init
    yield "wg_messages", "response", resp
    yield "wg_messages", "cookie-reply", cookie
    yield "wg_messages", "transport", transport
    yield "wg_messages", "keepalive", keepalive
    yield "wg_messages", "reserved-byte-set", bytes([1, 0, 1, 0]) + init[4:]
    yield "wg_messages", "inner-v4-padded", ipv4("100.96.2.3", "100.96.1.2", UDP, udp(1, 2, b"padded")) + bytes(10)
    yield "wg_messages", "inner-v6", ipv6("fd00:96:2::3", "fd00:96:1::2", UDP, udp(1, 2, b"v6"))
    yield "wg_messages", "key.txt", b"YIG7WxDvOKrkBa/xu3ydR4LsyZBiEXbA0HA/qlSSV2s=\n"
    yield "wg_messages", "key-noncanonical.txt", b"YIG7WxDvOKrkBa/xu3ydR4LsyZBiEXbA0HA/qlSSV2t="

    # wg_responder: modes 0 raw, 1 raw + mac1, 2 tampered genuine
    # initiation (8: + mac1), 3 genuine initiation (replay), 4 genuine
    # transport (8: tampered), 5 transport replay, 6 response to A,
    # 7 A's response to B's initiation (tampered with the bytes; 8: + mac1).
    yield "wg_responder", "handshake-then-data", bytes([0]) + wg_records((3, 0, b""), (6, 0, b""), (4, 1, b"\x45" + bytes(40)), (4, 1, b"x" * 100), (5, 0, b""))
    yield "wg_responder", "replayed-initiation", bytes([0]) + wg_records((3, 0, b""), (3, 5, b""), (3, 200, b""))
    yield "wg_responder", "flood", bytes([0]) + wg_records((2, 0, b""), (2, 0, b""), (2, 1, b""), (2, 2, b""))
    yield "wg_responder", "tampered-initiation", bytes([0]) + wg_records((10, 0, bytes([0]) * 50 + b"\x01"), (2, 0, b"\x80"), (3, 0, b""))
    yield "wg_responder", "raw-with-mac1", bytes([0]) + wg_records((1, 0, init), (1, 0, resp), (1, 0, cookie), (0, 0, transport))
    yield "wg_responder", "tampered-transport", bytes([0]) + wg_records((3, 0, b""), (6, 0, b""), (12, 0, b"\x01\x20" + bytes(30)), (4, 0, b"ok"))
    yield "wg_responder", "under-load", bytes([1]) + wg_records((3, 0, b""), (1, 0, init))
    yield "wg_responder", "psk", bytes([2]) + wg_records((3, 0, b""), (6, 0, b""), (4, 0, b"data"))
    yield "wg_responder", "b-initiates", bytes([0]) + wg_records((7, 0, b""), (0, 255, b""), (0, 255, b""), (0, 255, b""), (7, 0, bytes(20) + b"\x01"), (0, 255, b""), (0, 255, b""), (0, 255, b""), (15, 0, bytes(40) + b"\x02"))


def main():
    for target, name, data in list(seeds()) + list(wg_seeds()):
        d = os.path.join(ROOT, target)
        os.makedirs(d, exist_ok=True)
        fname = f"seed-{name}" + ("" if name.endswith((".toml", ".txt")) else ".bin")
        assert len(data) < 4096, (target, name, len(data))
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
        print(f"{target}/{fname}: {len(data)} bytes")


if __name__ == "__main__":
    main()
