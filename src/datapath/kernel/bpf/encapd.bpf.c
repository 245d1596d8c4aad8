// SPDX-License-Identifier: GPL-2.0
/*
 * encapd's kernel path: two traffic-control programs that do what the
 * workers do for the common packet, and hand everything else on to them,
 * and an XDP program that decapsulates in front of the underlay's GRO.
 *
 *   encap  (TCX egress of the TUN): an IPv4 or IPv6 packet the kernel routed
 *          into the TUN, for a peer's subnet -> outer IPv4 + UDP (+ VXLAN and
 *          an inner Ethernet header) -> out of the underlay.
 *   decap  (TCX ingress of the underlay): a peer's datagram in the node's wire
 *          format, for this node's subnet -> the inner packet, received by the
 *          TUN as if a worker had written it.
 *   xdp_decap (XDP of the underlay, where it helps): decap's checks on a
 *          frame before GRO; strips it to the inner packet and marks it,
 *          so that GRO merges the inner TCP and decap delivers the result.
 *
 * The rule both programs live by: a packet they do not take goes on
 * unchanged (TCX_NEXT) to the TUN or the socket, where the workers decide
 * it; a packet they take must come out exactly as the workers would have
 * sent or written it. Declining is always allowed, so every check below is
 * at least as strict as the workers' (src/datapath/packet.rs,
 * src/datapath/core/, src/datapath/format/), and the differential test
 * (tests/kernel_differential.rs) holds the two to it on generated packets.
 *
 * Configuration is in read-only globals (.rodata), set by the loader
 * before the verifier sees the program (src/datapath/kernel/object.rs), so
 * the verifier prunes the branches of the other wire format.
 */
#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "encapd.h"

/* ---- configuration (set by the loader; see object.rs) ---------------- */

/* The node's public (underlay) address and the backend's UDP port, in
 * network order: outer source of what encap sends, outer destination of
 * what decap takes. */
const volatile __be32 cfg_local_ip = 0;
const volatile __be16 cfg_port = 0;
/* The interface holding cfg_local_ip (encap's route lookups start there)
 * and the TUN (decap delivers into its receive path). */
const volatile __u32 cfg_underlay_ifindex = 0;
const volatile __u32 cfg_tun_ifindex = 0;
/* The node's own subnets (network and mask, network order); an IPv6 one
 * only when cfg_has_own6. */
const volatile __be32 cfg_own4_net = 0;
const volatile __be32 cfg_own4_mask = 0;
const volatile __u8 cfg_has_own6 = 0;
const volatile __be32 cfg_own6_net[4] = {};
const volatile __be32 cfg_own6_mask[4] = {};
/* The largest inner packet one datagram carries (NodeScope::max_inner):
 * larger ones earn the workers' "too big" ICMP. */
const volatile __u32 cfg_max_inner = 0;
/* The wire format: 0 flannel udp, 1 vxlan (then our VNI, network order in
 * the low 24 bits of a VXLAN word, and our VTEP MAC). */
const volatile __u8 cfg_vxlan = 0;
const volatile __be32 cfg_vni_word = 0;
const volatile __u8 cfg_vtep_mac[ETH_ALEN] = {};
/* Bytes in front of the IP header where encap runs: 0 on a TUN's egress
 * (no link layer). BPF_PROG_TEST_RUN always presents an Ethernet frame, so
 * the differential test loads encap with 14; encap then writes its outer
 * link-layer header over that frame's instead of making room for one
 * (tests/kernel_differential.rs). */
const volatile __u32 cfg_egress_l2_len = 0;
/* The underlay device's MAC: xdp_decap takes only frames addressed to it
 * (decap asks the skb's pkt_type). */
const volatile __u8 cfg_underlay_mac[ETH_ALEN] = {};
/* The Ethernet source address xdp_decap writes on what it decapsulated,
 * for decap to recognise after GRO: random per load (46 bits: a locally
 * administered unicast address), never sent; all zero (no frame carries
 * it as its source) when nothing is marked. */
const volatile __u8 cfg_xdp_mark[ETH_ALEN] = {};

/* ---- maps (layouts shared with src/datapath/kernel/maps.rs) ----------- */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_key4);
	__type(value, struct route);
	__uint(max_entries, MAX_ROUTES);
} routes4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_key6);
	__type(value, struct route);
	__uint(max_entries, MAX_ROUTES);
} routes6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, COUNTER_SLOTS);
} counters SEC(".maps");

/* ---- helpers ------------------------------------------------------------ */

#define AF_INET 2
#define VXLAN_FLAG_VNI 0x08

/* The VXLAN header (RFC 7348 section 5). */
struct vxlanhdr {
	__u8 flags;
	__u8 reserved1[3];
	__be32 vni_word; /* VNI in the high 24 bits (network order), reserved */
};

/* Everything between the UDP header and the inner packet for vxlan. */
struct vxlan_prefix {
	struct vxlanhdr vxlan;
	struct ethhdr eth;
} __attribute__((packed));

_Static_assert(sizeof(struct vxlan_prefix) == VXLAN_PREFIX_LEN, "VXLAN + Ethernet is 22 bytes");
_Static_assert(sizeof(struct route) == ROUTE_VALUE_LEN, "route value layout");

static __always_inline void count(enum counter_slot slot, __u64 bytes)
{
	__u32 key = slot;
	struct counter *c = bpf_map_lookup_elem(&counters, &key);

	if (c) {
		/* Per-CPU values: nothing else writes this CPU's copy meanwhile. */
		c->packets += 1;
		c->bytes += bytes;
	}
}

/* Bytes between the UDP header and the inner packet. */
static __always_inline __u32 prefix_len(void)
{
	return cfg_vxlan ? VXLAN_PREFIX_LEN : 0;
}

/* Makes the first `need` bytes readable by direct access (a driver may keep
 * only part of the headers in the linear area). False when the packet is
 * shorter or the kernel cannot pull. */
static __always_inline bool linear(struct __sk_buff *skb, __u32 need)
{
	if ((void *)(long)skb->data + need <= (void *)(long)skb->data_end)
		return true;
	if (need > skb->len)
		return false;
	return bpf_skb_pull_data(skb, need) == 0;
}

static __always_inline bool own4(__be32 addr)
{
	return (addr & cfg_own4_mask) == cfg_own4_net;
}

static __always_inline bool own6(const struct in6_addr *a)
{
	if (!cfg_has_own6)
		return false;
	for (int i = 0; i < 4; i++)
		if ((a->in6_u.u6_addr32[i] & cfg_own6_mask[i]) != cfg_own6_net[i])
			return false;
	return true;
}

/* What a router never forwards (packet.rs, is_forwardable): multicast,
 * limited broadcast, link-local, unspecified. */
static __always_inline bool forwardable4(__be32 dst)
{
	__u32 a = bpf_ntohl(dst);

	return (a >> 28) != 0xe && a != 0xffffffff && (a >> 16) != 0xa9fe && a != 0;
}

static __always_inline bool forwardable6(const struct in6_addr *dst)
{
	__u32 w0 = bpf_ntohl(dst->in6_u.u6_addr32[0]);

	if ((w0 >> 24) == 0xff || (w0 >> 22) == (0xfe80 >> 6))
		return false;
	return (dst->in6_u.u6_addr32[0] | dst->in6_u.u6_addr32[1] | dst->in6_u.u6_addr32[2] |
		dst->in6_u.u6_addr32[3]) != 0;
}

static __always_inline struct route *route4(__be32 addr)
{
	struct route_key4 key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&routes4, &key);
}

static __always_inline struct route *route6(const struct in6_addr *addr)
{
	struct route_key6 key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&routes6, &key);
}

/* RFC 1071 checksum of an IPv4 header without options. */
static __always_inline __sum16 ipv4_header_checksum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* The TTL decrement the workers make (wire/ip.rs, decrement_ttl): the
 * checksum updated incrementally as RFC 1624 eqn. 3 (checksum::update16),
 * bit for bit, so that a header the workers would leave with 0xffff or
 * 0x0000 gets the same here. */
static __always_inline void decrement_ttl4(struct iphdr *ip)
{
	__u16 old = bpf_ntohs(*(__be16 *)&ip->ttl);
	__u16 new;
	__u32 sum;

	ip->ttl -= 1;
	new = bpf_ntohs(*(__be16 *)&ip->ttl);
	sum = (__u16)~bpf_ntohs(ip->check) + (__u32)(__u16)~old + new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = bpf_htons((__u16)~sum);
}

/* ---- encap ----------------------------------------------------------------- */

/* What encap learned about the inner packet before it changes anything. */
struct inner {
	const struct route *route;
	__u32 len;     /* the whole inner packet */
	__u32 segment; /* the largest packet it becomes on the wire (GSO) */
	bool v6;
};

/* The length of one segment of a GSO packet: its headers plus gso_size.
 * Zero when the transport is neither TCP nor UDP (nothing to size). */
static __always_inline __u32 gso_segment_len(struct __sk_buff *skb, __u32 l3_len, __u8 proto)
{
	void *data, *data_end;

	if (proto == IPPROTO_UDP)
		return l3_len + sizeof(struct udphdr) + skb->gso_size;
	if (proto != IPPROTO_TCP || l3_len > 60 || !linear(skb, cfg_egress_l2_len + l3_len + sizeof(struct tcphdr)))
		return 0;
	data = (void *)(long)skb->data + (cfg_egress_l2_len & 0xff);
	data_end = (void *)(long)skb->data_end;
	if (data + l3_len + sizeof(struct tcphdr) > data_end)
		return 0;
	struct tcphdr *tcp = data + l3_len;
	return l3_len + tcp->doff * 4 + skb->gso_size;
}

/* classify_egress, as far as the kernel path takes it: a well-formed IPv4
 * packet (options and fragments allowed, as the workers allow them) for
 * a forwardable address outside our subnet, TTL > 1, a route whose peer
 * decapsulates in its kernel on our port, no larger than the workers
 * send. Returns false for anything else (the workers answer it). */
static __always_inline bool egress_ipv4(struct __sk_buff *skb, struct inner *in)
{
	const __u32 l2 = cfg_egress_l2_len & 0xff;
	void *data, *data_end;
	struct iphdr *ip;
	__u32 hl, len;

	if (skb->len < l2 || !linear(skb, l2 + sizeof(*ip)))
		return false;
	len = skb->len - l2;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l2;
	if ((void *)(ip + 1) > data_end || ip->version != 4)
		return false;
	hl = ip->ihl * 4;
	if (hl < sizeof(*ip) || hl > len || bpf_ntohs(ip->tot_len) != len)
		return false;
	if (!forwardable4(ip->daddr) || own4(ip->daddr) || ip->ttl <= 1)
		return false;
	in->route = route4(ip->daddr);
	in->len = len;
	in->v6 = false;
	in->segment = skb->gso_size ? gso_segment_len(skb, hl, ip->protocol) : len;
	return in->route != NULL;
}

/* The same for IPv6 (no extension header is looked at: the workers do
 * not either). */
static __always_inline bool egress_ipv6(struct __sk_buff *skb, struct inner *in)
{
	const __u32 l2 = cfg_egress_l2_len & 0xff;
	void *data, *data_end;
	struct ipv6hdr *ip;
	__u32 len;

	if (skb->len < l2 || !linear(skb, l2 + sizeof(*ip)))
		return false;
	len = skb->len - l2;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l2;
	if ((void *)(ip + 1) > data_end || ip->version != 6)
		return false;
	if (sizeof(*ip) + bpf_ntohs(ip->payload_len) != len)
		return false;
	if (!forwardable6(&ip->daddr) || own6(&ip->daddr) || ip->hop_limit <= 1)
		return false;
	in->route = route6(&ip->daddr);
	in->len = len;
	in->v6 = true;
	in->segment = skb->gso_size ? gso_segment_len(skb, sizeof(*ip), ip->nexthdr) : len;
	return in->route != NULL;
}

/* Writes the outer headers in front of the inner packet (at `eth`, the
 * room bpf_skb_change_head made for the link layer) and decrements the
 * inner TTL. False when the headers are out of reach (the packet is then
 * half-built and must be dropped). */
static __always_inline bool write_outer(struct __sk_buff *skb, const struct inner *in, const struct route *r,
					__be32 peer, __be16 sport)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	void *inner = (void *)(udp + 1) + prefix_len();
	__u32 outer = sizeof(*ip) + sizeof(*udp) + prefix_len();

	if (inner + (in->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) > data_end)
		return false;
	/* The link layer: bpf_redirect_neigh fills in both addresses; the
	 * EtherType is what the neighbour output keeps. */
	__builtin_memset(eth, 0, sizeof(*eth));
	eth->h_proto = bpf_htons(ETH_P_IP);
	/* Outer IPv4 as the workers' socket sends it: DF (the socket's default
	 * IP_PMTUDISC_WANT sets it on every datagram that fits the route's
	 * MTU, and encap only sends what fits), ID 0 (what Linux gives an
	 * unconnected socket's DF datagram), TTL 64, TOS 0. */
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(in->len + outer);
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = cfg_local_ip;
	ip->daddr = peer;
	ip->check = ipv4_header_checksum(ip);
	udp->source = sport;
	udp->dest = cfg_port;
	udp->len = bpf_htons(in->len + outer - sizeof(*ip));
	/* No outer UDP checksum (allowed over IPv4, RFC 768, and what the
	 * kernel's own tunnels send): for a TSO packet the kernel copies this
	 * header into every segment, and no helper finishes a checksum there. */
	udp->check = 0;
	if (cfg_vxlan) {
		struct vxlan_prefix *p = (void *)(udp + 1);

		__builtin_memset(&p->vxlan, 0, sizeof(p->vxlan));
		p->vxlan.flags = VXLAN_FLAG_VNI;
		p->vxlan.vni_word = cfg_vni_word;
		__builtin_memcpy(p->eth.h_dest, r->mac, ETH_ALEN);
		for (int i = 0; i < ETH_ALEN; i++)
			p->eth.h_source[i] = cfg_vtep_mac[i];
		p->eth.h_proto = bpf_htons(in->v6 ? ETH_P_IPV6 : ETH_P_IP);
	}
	/* The hop the workers count when they forward. */
	if (in->v6) {
		struct ipv6hdr *ip6 = inner;

		if ((void *)(ip6 + 1) > data_end)
			return false;
		ip6->hop_limit -= 1;
	} else {
		struct iphdr *ip4 = inner;

		if ((void *)(ip4 + 1) > data_end)
			return false;
		decrement_ttl4(ip4);
	}
	return true;
}

SEC("classifier")
int encap(struct __sk_buff *skb)
{
	struct inner in = {};
	struct route r;
	__be16 sport = cfg_port;
	__u32 outer = sizeof(struct iphdr) + sizeof(struct udphdr) + prefix_len();
	__u64 flags;
	long rc;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (!egress_ipv4(skb, &in))
			return TCX_NEXT;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (!egress_ipv6(skb, &in))
			return TCX_NEXT;
	} else {
		return TCX_NEXT;
	}
	/* A copy: the map value may change under us, the packet must be built
	 * from one version of it. */
	__builtin_memcpy(&r, in.route, sizeof(r));
	if (!(r.flags & ROUTE_ENCAP))
		return TCX_NEXT; /* the peer reads datagrams in user space */
	/* The workers' size rule: larger than one datagram carries earns "too
	 * big" (a GSO packet: its segments are what is sized). */
	if (in.segment == 0 || in.segment > cfg_max_inner || in.len + outer > 0xffff)
		return TCX_NEXT;

	/* Route the outer packet as the workers' socket would, and check its
	 * size against the route's MTU (which includes a path MTU learnt from
	 * ICMP): a datagram that does not fit is the workers', whose socket
	 * fragments it; an unresolved neighbour too, whose socket's send makes
	 * the kernel resolve it. Nothing is changed yet. */
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = IPPROTO_UDP,
		.tot_len = in.segment + outer,
		.ifindex = cfg_underlay_ifindex,
		.ipv4_src = cfg_local_ip,
		.ipv4_dst = r.peer,
	};
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(C_ENCAP_NO_NEIGHBOUR, in.len);
		return TCX_NEXT;
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		count(C_ENCAP_FRAG_NEEDED, in.len);
		return TCX_NEXT;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(C_ENCAP_NO_ROUTE, in.len);
		return TCX_NEXT;
	}

	if (cfg_vxlan) {
		/* The source port spread by flow, as a kernel VTEP does (RFC 7348
		 * section 5), from the inner headers' hash, in 49152-65535. */
		__u32 hash = bpf_get_hash_recalc(skb);

		sport = bpf_htons(0xc000 | (hash & 0x3fff));
	}
	/* Room for the outer headers in front of the inner packet; a TSO
	 * packet becomes a UDP-tunnel one, cut with the outer headers in every
	 * segment, its gso_size fixed (the TUN's MTU left room for them). On
	 * failure the packet is unchanged: the workers take it. */
	flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	if (cfg_vxlan)
		flags |= BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (bpf_skb_adjust_room(skb, outer, BPF_ADJ_ROOM_MAC, flags))
		return TCX_NEXT;
	/* From here on the packet is no longer the workers': a failure drops
	 * it, counted. The TUN has no link layer; make room for the one the
	 * neighbour output writes. */
	if ((cfg_egress_l2_len == 0 && bpf_skb_change_head(skb, ETH_HLEN, 0)) || !write_outer(skb, &in, &r, r.peer, sport)) {
		count(C_ENCAP_FAILED, in.len);
		return TC_ACT_SHOT;
	}
	/* Out of the interface and to the next hop the lookup found, with its
	 * neighbour entry (resolved, as the lookup checked). */
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };
	rc = bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	if (rc != TC_ACT_REDIRECT) {
		count(C_ENCAP_FAILED, in.len);
		return TC_ACT_SHOT;
	}
	count(C_ENCAPSULATED, in.len);
	return TC_ACT_REDIRECT;
}

/* ---- decap ------------------------------------------------------------------ */

/* Whether a frame's source address is cfg_xdp_mark (xdp_decap's). */
static __always_inline bool xdp_marked(const struct ethhdr *eth)
{
	if (!(cfg_xdp_mark[0] & 0x02))
		return false; /* no mark configured */
	for (int i = 0; i < ETH_ALEN; i++)
		if (eth->h_source[i] != cfg_xdp_mark[i])
			return false;
	return true;
}

/* The ingress filter, as far as the kernel path takes it (format unwrap +
 * check_ingress): for vxlan our VNI and MAC carrying IP; one whole IPv4
 * packet (total length = the rest of the datagram) or IPv6 packet (payload
 * length likewise), its source in a subnet whose owner's underlay address
 * is the outer source, its destination in one of our subnets. Returns the
 * inner packet's length, or 0 for anything the workers decide. */
static __always_inline __u32 check_inner(void *data, void *data_end, __u32 at, __be32 sender, __u32 inner_len, bool gso,
					 bool *v6)
{
	const struct route *r;

	if (at > 128)
		return 0;
	/* No larger than one datagram may carry: a larger one (not GSO) is a
	 * coalesced super-packet to the workers, which cut it (TCP) or drop it
	 * as too big (is_super_packet in datapath/offload.rs). A GSO packet's
	 * segments are its gso_size. */
	if (!gso && inner_len - prefix_len() > cfg_max_inner)
		return 0;
	if (cfg_vxlan) {
		struct vxlan_prefix *p = data + at;

		if ((void *)(p + 1) > data_end)
			return 0;
		if (!(p->vxlan.flags & VXLAN_FLAG_VNI) ||
		    (p->vxlan.vni_word & bpf_htonl(0xffffff00)) != (cfg_vni_word & bpf_htonl(0xffffff00)))
			return 0;
		for (int i = 0; i < ETH_ALEN; i++)
			if (p->eth.h_dest[i] != cfg_vtep_mac[i])
				return 0;
		*v6 = p->eth.h_proto == bpf_htons(ETH_P_IPV6);
		if (!*v6 && p->eth.h_proto != bpf_htons(ETH_P_IP))
			return 0; /* ARP and the rest: the workers answer or drop */
		at += sizeof(*p);
		inner_len -= sizeof(*p);
	} else {
		__u8 *first = data + at;

		if ((void *)(first + 1) > data_end)
			return 0;
		*v6 = (*first >> 4) == 6;
	}
	if (*v6) {
		struct ipv6hdr *ip = data + at;

		if ((void *)(ip + 1) > data_end || ip->version != 6)
			return 0;
		if (sizeof(*ip) + bpf_ntohs(ip->payload_len) != inner_len || !own6(&ip->daddr))
			return 0;
		if (gso && ip->nexthdr != IPPROTO_TCP)
			return 0; /* see gso_ok in decap */
		r = route6(&ip->saddr);
	} else {
		struct iphdr *ip = data + at;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return 0;
		if (bpf_ntohs(ip->tot_len) != inner_len || ip->ihl * 4 > inner_len || !own4(ip->daddr))
			return 0;
		if (gso && ip->protocol != IPPROTO_TCP)
			return 0; /* see gso_ok in decap */
		r = route4(ip->saddr);
	}
	if (!r || !(r->flags & ROUTE_PEER_V4) || r->peer != sender)
		return 0; /* spoofed, unowned or unknown: counted by the workers */
	return inner_len;
}

/* Every check both decapsulating programs make (one implementation: the
 * TC `decap` and the XDP `xdp_decap` differ only in where the frame and
 * its metadata come from). `data` is an Ethernet frame of `len` bytes
 * whose headers, up to an IPv6 inner header, are readable where the frame
 * has them; `csum_verified`: the device verified the outer UDP checksum
 * (CHECKSUM_UNNECESSARY); `gso`: the frame is a GSO packet (TC only).
 *
 * The outer IPv4 header as the stack would accept it for our socket: no
 * options, not a fragment, valid checksum, UDP to our address and port,
 * lengths that account for every byte of the frame (a padded frame is
 * left to the stack, which trims it). A UDP checksum the device has not
 * verified is the stack's to verify (and a bad one to drop): only a zero
 * checksum (none, RFC 768) or a device-verified one is taken. Then the
 * ingress filter (check_inner). Returns the inner packet's length, or 0:
 * the workers decide. */
static __always_inline __u32 check_datagram(void *data, void *data_end, __u32 len, bool csum_verified, bool gso, bool *v6)
{
	const __u32 headers = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr);
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > data_end)
		return 0;
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	if (ip->daddr != cfg_local_ip || udp->dest != cfg_port)
		return 0;
	if (len < headers + prefix_len() || bpf_ntohs(ip->tot_len) != len - sizeof(struct ethhdr) ||
	    bpf_ntohs(udp->len) != len - sizeof(struct ethhdr) - sizeof(struct iphdr))
		return 0;
	if (ipv4_header_checksum(ip) != 0)
		return 0;
	if (udp->check && !csum_verified)
		return 0;
	return check_inner(data, data_end, headers, ip->saddr, len - headers, gso, v6);
}

SEC("classifier")
int decap(struct __sk_buff *skb)
{
	const __u32 headers = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr);
	__u32 outer = sizeof(struct iphdr) + sizeof(struct udphdr) + prefix_len();
	void *data, *data_end;
	__u32 inner_len, need;
	bool v6 = false;
	__u64 flags;

	/* Decapsulated by xdp_decap before GRO (which may have merged it with
	 * its flow's next packets since): checked and counted there, into the
	 * TUN as decap's own. xdp_decap marks what it decapsulated with
	 * cfg_xdp_mark as the Ethernet source address, a secret (random per
	 * load) that never leaves the host: a frame off the wire cannot carry
	 * it. (XDP metadata would be the usual mark, but this machine's kernel
	 * refuses bpf_xdp_adjust_meta to every program.) */
	if (skb->pkt_type == PACKET_HOST &&
	    (skb->protocol == bpf_htons(ETH_P_IP) || skb->protocol == bpf_htons(ETH_P_IPV6)) &&
	    linear(skb, sizeof(struct ethhdr))) {
		struct ethhdr *eth = (void *)(long)skb->data;

		if ((void *)(eth + 1) <= (void *)(long)skb->data_end && xdp_marked(eth)) {
			count(C_XDP_DELIVERED, skb->len - sizeof(struct ethhdr));
			return bpf_redirect(cfg_tun_ifindex, BPF_F_INGRESS);
		}
	}
	/* Only frames for this host: the stack drops the rest before any
	 * socket sees them. */
	if (skb->pkt_type != PACKET_HOST || skb->protocol != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	/* Room to read an IPv6 inner header where the datagram has one. */
	need = headers + prefix_len() + sizeof(struct ipv6hdr);
	if (!linear(skb, need <= skb->len ? need : skb->len))
		return TCX_NEXT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	inner_len = check_datagram(data, data_end, skb->len, bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY) >= 0,
				   skb->gso_size != 0, &v6);
	if (!inner_len)
		return TCX_NEXT;
	/* Strip the outer IPv4 + UDP (+ VXLAN + inner Ethernet) behind the
	 * link-layer header; an IPv6 inner packet changes skb->protocol. On
	 * failure the datagram is unchanged: the workers take it.
	 *
	 * gso_ok: a GSO packet (a peer's TSO packet that crossed a veth whole)
	 * keeps its segment size and its UDP-tunnel GSO type: no flag of
	 * bpf_skb_adjust_room clears the type on this kernel (6.18 refuses
	 * every flag bit above BPF_F_ADJ_ROOM_DECAP_L3_IPV6). It is taken
	 * only with a TCP inner packet, for this node's own subnet, which the
	 * node routes to its pods' bridge: veth and bridge carry the packet
	 * whole, and software segmentation cuts TCP by its own headers. A UDP
	 * one (USO) would be cut as a tunnel: the workers take it. What is
	 * left: a node that routes its own subnet out of a device with
	 * UDP-tunnel TSO offload (docs/kernel-path.md, "Limits"). A GRO run
	 * of several datagrams never gets here (its lengths do not add up). */
	flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (v6)
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	if (bpf_skb_adjust_room(skb, -(__s32)outer, BPF_ADJ_ROOM_MAC, flags))
		return TCX_NEXT;
	count(C_DECAPSULATED, inner_len);
	return bpf_redirect(cfg_tun_ifindex, BPF_F_INGRESS);
}

/* ---- xdp_decap ---------------------------------------------------------------- */

/* decap, before GRO: on the underlay's XDP hook (native mode only: a
 * generic-mode program runs after GRO, where decap already is). A
 * datagram decap would take is stripped here to its inner packet behind a
 * new Ethernet header (to the frame's destination, from cfg_xdp_mark,
 * with the inner family's EtherType) and passed on, so that the device's
 * GRO merges the inner TCP of a flow as it merges any TCP (on an underlay
 * that delivers MTU-sized frames, decap sees one datagram at a time and
 * the inner stack gets no GRO: docs/kernel-path.md, "Decapsulation before
 * GRO"). decap, at TCX ingress after GRO, knows the mark and delivers the
 * (possibly merged) inner packet into the TUN, exactly as it delivers
 * what it decapsulates itself: the same route, firewall hooks and
 * reverse-path check as before.
 *
 * What it leaves (XDP_PASS, untouched) goes on to decap and the workers:
 * everything decap leaves, and also datagrams with a UDP checksum (XDP
 * cannot know whether the device verified it; decap can) and frames not
 * addressed to the device's MAC. */
SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	__u32 outer = sizeof(struct iphdr) + sizeof(struct udphdr) + prefix_len();
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 dest[ETH_ALEN];
	__u32 inner_len;
	bool v6 = false;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	/* PACKET_HOST: unicast to this device (a promiscuous device also
	 * receives frames for other hosts, which the stack drops). */
	for (int i = 0; i < ETH_ALEN; i++)
		if (eth->h_dest[i] != cfg_underlay_mac[i])
			return XDP_PASS;
	inner_len = check_datagram(data, data_end, data_end - data, false, false, &v6);
	if (!inner_len)
		return XDP_PASS;
	__builtin_memcpy(dest, eth->h_dest, ETH_ALEN);
	/* On failure the frame is unchanged: decap and the workers take it. */
	if (bpf_xdp_adjust_head(ctx, outer))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP; /* unreachable: the inner packet is behind it */
	__builtin_memcpy(eth->h_dest, dest, ETH_ALEN);
	for (int i = 0; i < ETH_ALEN; i++)
		eth->h_source[i] = cfg_xdp_mark[i];
	eth->h_proto = bpf_htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
	count(C_DECAPSULATED, inner_len);
	count(C_XDP_DECAPSULATED, inner_len);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
