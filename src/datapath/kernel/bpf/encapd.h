/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What encapd.bpf.c shares with the loader (src/datapath/kernel/maps.rs
 * mirrors every layout here; its tests check the sizes), and the few uapi
 * names newer than the linux-libc-dev this is built against (Debian 12
 * ships 6.1 headers; the kernel path needs a 6.6 kernel for TCX).
 */
#ifndef ENCAPD_BPF_H
#define ENCAPD_BPF_H

#include <linux/types.h>

/* Size of each routes map: flannel's default network (a /16 of /24s) has
 * 256 subnets; this leaves room for far larger clusters. */
#define MAX_ROUTES 65536

/* LPM trie keys: the prefix length, then the address in network order. */
struct route_key4 {
	__u32 prefixlen;
	__be32 addr;
};

struct route_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* A route's value: every route of the workers' table is in the map (so a
 * longest-prefix answer is the workers' answer); the flags say what the
 * programs may do with it. */
struct route {
	__be32 peer;       /* the owner's underlay IPv4 address (ROUTE_PEER_V4) */
	__u8 mac[6];       /* its VTEP MAC (vxlan; zero for udp) */
	__u8 flags;        /* ROUTE_* */
	__u8 pad;
};
#define ROUTE_VALUE_LEN 12

/* encap may send to this peer from the kernel: it decapsulates in its
 * kernel, listens on our port, has an IPv4 underlay address and, for vxlan,
 * a VTEP MAC. Without it the workers send. */
#define ROUTE_ENCAP 1
/* The owner's underlay address is IPv4 (`peer` holds it): decap may
 * compare a datagram's source with it. */
#define ROUTE_PEER_V4 2

/* Counters: packets and bytes of inner packets, per CPU. */
struct counter {
	__u64 packets;
	__u64 bytes;
};

enum counter_slot {
	C_ENCAPSULATED = 0,       /* sent to a peer */
	C_DECAPSULATED = 1,       /* delivered to the TUN */
	C_ENCAP_FAILED = 2,       /* dropped half-built: a step refused */
	C_ENCAP_NO_ROUTE = 3,     /* the underlay has no route to the peer (workers) */
	C_ENCAP_NO_NEIGHBOUR = 4, /* the next hop is unresolved (workers) */
	C_ENCAP_FRAG_NEEDED = 5,  /* larger than the route's MTU (workers) */
	C_XDP_DECAPSULATED = 6,   /* of C_DECAPSULATED: by xdp_decap, before GRO */
	C_XDP_DELIVERED = 7,      /* xdp_decap's packets decap delivered, after GRO merged them */
	COUNTER_SLOTS = 8,
};

#define VXLAN_PREFIX_LEN 22

/* TCX verdict: on to the next program, or the stack (include/uapi/linux/bpf.h, 6.6). */
#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

/* bpf_skb_adjust_room: the inner packet's family after decapsulation, when
 * it differs from the outer (6.3). */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/* IPv4 fragment bits (include/net/ip.h; not in the uapi headers). */
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#endif
