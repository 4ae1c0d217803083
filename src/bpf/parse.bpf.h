/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * parse.bpf.h - the one packet parser shared by the TC, XDP and replay paths.
 *
 * Fills a struct flow_tuple from a frame with direct packet access. Rules
 * (tests/test_parser.py pins each of them):
 *  - Ethernet with up to two VLAN tags (0x8100, 0x88a8, 0x9100), or a bare
 *    IP packet on L3 devices (tun, wireguard) where `l2_proto` is non-zero;
 *  - IPv4: version 4, IHL >= 5, the whole header with options captured and a
 *    total length not shorter than the header, else the frame is unparsed;
 *    a total length of 0 is a TSO / BIG TCP super-packet (Linux >= 6.3 sends
 *    IPv4 GSO packets over 64 KiB so): its datagram runs to the frame's end;
 *  - IPv6: version 6 and the 40-byte header captured, else unparsed; up to
 *    PARSE_MAX_EXTHDRS extension headers are walked (hop-by-hop, routing,
 *    fragment, destination options, AH, HIP, shim6);
 *  - `proto` is the upper-layer protocol; where the walk stops early
 *    (truncated extension header, ESP, too many headers) it is the header
 *    type at which it stopped;
 *  - ports (or the fields flow.h lists for ICMP, ESP, AH, GRE and OSPF)
 *    come only from a complete minimal L4 header that lies inside the IP
 *    datagram (total/payload length) and inside the captured frame, and
 *    never from a non-first fragment: otherwise they are 0. IPv6 walks AH
 *    as an extension header (the upper layer behind it is the flow); AH is
 *    the flow, with its SPI, only where the walk ends at it (the header
 *    limit reached);
 *  - the TCP flag byte is read under the same rule as the ports (else 0) into
 *    `li->tcp_flags`, which the caller zeroes: it is not part of the key; so
 *    are, for TCP and UDP with a whole L4 header, where it starts
 *    (`li->l4_off` from the frame's first byte), the TCP header's length
 *    (`li->tcp_hl`) and where the payload starts (`li->pay_off`, `li->pay_len`
 *    by the headers; 0: none), for the TCP health (tcp_health.bpf.h); with
 *    `pay`, the carrier (`li->l7`) too, for the application label's look
 *    (l7_probe.bpf.h);
 *  - ARP (EtherType 0x0806, when the caller asks for it): Ethernet/IPv4 ARP
 *    only (hardware type 1, protocol type 0x0800, address sizes 6 and 4, the
 *    28 bytes captured) is a flow (flow.h); anything else is unparsed.
 *
 * Returns 0 when the tuple was filled (the packet is a flow), -1 when the
 * frame is not a packet we can key (the caller counts it as unparsed).
 */
#ifndef PKTSTAT_PARSE_BPF_H
#define PKTSTAT_PARSE_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "l7.h"

#define PARSE_MAX_EXTHDRS 8

/* What the parser tells beyond the key (zeroed by the caller). */
struct l4_info {
	__u32 pay_off;  /* where the TCP or UDP payload starts in the frame */
	__u32 pay_len;  /* its length by the IP and TCP headers (0: no payload) */
	__u8 tcp_flags; /* the TCP flag byte (enum tcp_flag_bits) */
	__u8 l7;        /* L7_TCP or L7_UDP (l7.h): the L4 header is whole; 0: none */
	__u16 l4_off;   /* where the TCP or UDP header starts */
	__u8 tcp_hl;    /* the TCP header's length (0: no whole TCP header) */
	__u8 retrans;   /* tcp_health.bpf.h: the segment is a retransmission */
	__u8 _pad[2];
};

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define IPPROTO_OSPF 89
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_HIP 139
#define NEXTHDR_SHIM6 140

struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

/* Ethernet/IPv4 ARP (RFC 826): the only ARP the parser keys. */
struct arp_ipv4 {
	__be16 htype; /* 1: Ethernet */
	__be16 ptype; /* 0x0800: IPv4 */
	__u8 hlen;    /* 6 */
	__u8 plen;    /* 4 */
	__be16 oper;  /* 1 request, 2 reply ... */
	__u8 sha[6];
	__u8 spa[4]; /* sender protocol address */
	__u8 tha[6];
	__u8 tpa[4]; /* target protocol address */
};

/* Minimal L4 header that must be present for the key fields to be read. */
static __always_inline __u32 l4_min_len(__u8 proto) {
	switch (proto) {
	case IPPROTO_TCP:
		return 20;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		return 8;
	case IPPROTO_SCTP:
		return 12;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
	case IPPROTO_GRE: /* flags and version, protocol type */
		return 4;
	case IPPROTO_ESP: /* SPI, sequence number */
		return 8;
	case IPPROTO_AH: /* next header, length, reserved, SPI, sequence number */
		return 12;
	case IPPROTO_OSPF: /* the fixed header OSPFv2 and OSPFv3 share */
		return 16;
	default:
		return 0;
	}
}

/* Where the four bytes the key fields come from start in the L4 header. */
static __always_inline __u32 l4_fields_at(__u8 proto) {
	return proto == IPPROTO_AH ? 4 : 0;
}

/* The key fields from those four bytes `b` (flow.h says what each protocol
 * keeps in sport/dport); drops.bpf.c shares this. */
static __always_inline void l4_fields(const __u8 *b, struct flow_tuple *t) {
	switch (t->proto) {
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		t->sport = b[0]; /* type */
		t->dport = b[1]; /* code */
		break;
	case IPPROTO_GRE:
		t->sport = ((__u16)b[2] << 8) | b[3]; /* protocol type (EtherType) */
		t->dport = ((__u16)b[0] << 8) | b[1]; /* flags and version */
		break;
	case IPPROTO_OSPF:
		t->sport = b[1]; /* message type */
		t->dport = b[0]; /* version */
		break;
	default: /* ports; ESP/AH: the SPI, high half in sport */
		t->sport = bpf_ntohs(((const __be16 *)b)[0]);
		t->dport = bpf_ntohs(((const __be16 *)b)[1]);
	}
}

/* l4 points at the upper-layer header, `l4_off` bytes into the frame; `room`
 * is how many bytes of the IP datagram remain from l4 on (from the IP length
 * fields). */
static __always_inline void parse_l4(void *l4, __u32 l4_off, void *data_end, __u32 room, struct flow_tuple *t,
                                     struct l4_info *li, bool pay) {
	__u32 need, hl;

	/* One comparison tree: the protocols with ports (and ESP, whose SPI lies
	 * where ports do) go straight to them, as before the other fields. */
	switch (t->proto) {
	case IPPROTO_TCP:
		need = 20;
		break;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_ESP:
		need = 8;
		break;
	case IPPROTO_SCTP:
		need = 12;
		break;
	default: /* ICMP, GRE, OSPF, AH: l4_fields */
		need = l4_min_len(t->proto);
		if (!need || need > room || l4 + need > data_end)
			return;
		if (t->proto == IPPROTO_AH) { /* the SPI is at 4 (need is not a constant to the verifier) */
			l4 += 4;
			if (l4 + 4 > data_end)
				return;
		}
		l4_fields(l4, t);
		return;
	}
	if (need > room || l4 + need > data_end)
		return;
	t->sport = bpf_ntohs(((__be16 *)l4)[0]);
	t->dport = bpf_ntohs(((__be16 *)l4)[1]);
	if (t->proto == IPPROTO_UDP) {
		hl = 8;
		if (pay)
			li->l7 = L7_UDP;
	} else if (t->proto == IPPROTO_TCP && l4 + 20 <= data_end) {
		/* need is 20 for TCP; the verifier is told again with a constant */
		li->tcp_flags = ((__u8 *)l4)[13];
		hl = (((__u8 *)l4)[12] >> 4) * 4;
		if (hl < 20)
			return;
		li->tcp_hl = hl;
		if (pay)
			li->l7 = L7_TCP;
	} else {
		return;
	}
	li->l4_off = l4_off;
	if (hl >= room) /* no payload */
		return;
	li->pay_off = l4_off + hl;
	li->pay_len = room - hl;
}

static __always_inline int parse_arp(void *l3, void *data_end, struct flow_tuple *t) {
	struct arp_ipv4 *a = l3;

	if ((void *)(a + 1) > data_end)
		return -1;
	if (a->htype != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) || a->hlen != 6 || a->plen != 4)
		return -1;
	t->ipver = FLOW_IPVER_ARP;
	t->proto = FLOW_PROTO_ARP;
	((__u32 *)t->saddr)[2] = bpf_htonl(0xffff);
	__builtin_memcpy(t->saddr + 12, a->spa, 4);
	((__u32 *)t->daddr)[2] = bpf_htonl(0xffff);
	__builtin_memcpy(t->daddr + 12, a->tpa, 4);
	t->sport = bpf_ntohs(a->oper);
	return 0;
}

static __always_inline int parse_ipv4(void *l3, __u32 l3_off, void *data_end, struct flow_tuple *t,
                                      struct l4_info *li, bool pay) {
	struct iphdr *ip = l3;
	__u32 hlen, tot_len;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	hlen = ip->ihl * 4;
	if (l3 + hlen > data_end)
		return -1;
	tot_len = bpf_ntohs(ip->tot_len);
	if (!tot_len) /* TSO / BIG TCP: no limit from the header, as for IPv6 jumbograms */
		tot_len = 0xffff + hlen;
	if (tot_len < hlen)
		return -1;

	t->ipver = 4;
	t->proto = ip->protocol;
	((__u32 *)t->saddr)[2] = bpf_htonl(0xffff);
	((__u32 *)t->saddr)[3] = ip->saddr;
	((__u32 *)t->daddr)[2] = bpf_htonl(0xffff);
	((__u32 *)t->daddr)[3] = ip->daddr;

	if (ip->frag_off & bpf_htons(0x1fff)) /* non-first fragment */
		return 0;
	parse_l4(l3 + hlen, l3_off + hlen, data_end, tot_len - hlen, t, li, pay);
	return 0;
}

static __always_inline int parse_ipv6(void *l3, __u32 l3_off, void *data_end, struct flow_tuple *t,
                                      struct l4_info *li, bool pay) {
	struct ipv6hdr *ip6 = l3;
	__u32 off = sizeof(*ip6), plen;
	__u8 nh;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (ip6->version != 6)
		return -1;

	t->ipver = 6;
	__builtin_memcpy(t->saddr, &ip6->saddr, 16);
	__builtin_memcpy(t->daddr, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	/* payload length 0 means a jumbogram: no limit from the header */
	plen = bpf_ntohs(ip6->payload_len);
	plen = plen ? plen + sizeof(*ip6) : 0xffff;

	for (int i = 0; i < PARSE_MAX_EXTHDRS; i++) {
		__u8 *ext = l3 + off;

		if (nh != NEXTHDR_HOP && nh != NEXTHDR_ROUTING && nh != NEXTHDR_FRAGMENT &&
		    nh != NEXTHDR_AUTH && nh != NEXTHDR_DEST && nh != NEXTHDR_HIP && nh != NEXTHDR_SHIM6)
			break;
		if (nh == NEXTHDR_FRAGMENT) {
			if ((void *)(ext + 8) > data_end)
				goto stop;
			/* offset in 8-byte units: non-zero = not the first fragment */
			if (*(__be16 *)(ext + 2) & bpf_htons(0xfff8)) {
				t->proto = ext[0];
				return 0;
			}
			nh = ext[0];
			off += 8;
			continue;
		}
		if ((void *)(ext + 2) > data_end)
			goto stop;
		if (nh == NEXTHDR_AUTH)
			off += ((__u32)ext[1] + 2) * 4;
		else
			off += ((__u32)ext[1] + 1) * 8;
		nh = ext[0];
	}
	t->proto = nh;
	if (off < plen)
		parse_l4(l3 + off, l3_off + off, data_end, plen - off, t, li, pay);
	return 0;
stop:
	t->proto = nh;
	return 0;
}

/* l2_proto == 0: the frame starts with an Ethernet header. Otherwise the frame
 * starts at the network header and l2_proto (network byte order) names it.
 * `arp`: key ARP (a load-time constant of the caller, so a program without
 * ARP carries no ARP code). `pay` (a constant): find the payload too (the
 * look of l7_probe.bpf.h; counting needs only the flag byte). */
static __always_inline int parse_frame(void *data, void *data_end, __be16 l2_proto, bool arp,
                                       struct flow_tuple *t, struct l4_info *li, bool pay) {
	void *l3 = data;
	__u32 l3_off = 0;
	__be16 proto = l2_proto;

	if (!proto) {
		struct ethhdr *eth = data;

		if ((void *)(eth + 1) > data_end)
			return -1;
		proto = eth->h_proto;
		l3 = eth + 1;
		l3_off = sizeof(*eth);
		for (int i = 0; i < 2; i++) {
			struct vlan_tag *vlan = l3;

			if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD) &&
			    proto != bpf_htons(0x9100))
				break;
			if ((void *)(vlan + 1) > data_end)
				return -1;
			proto = vlan->encap_proto;
			l3 = vlan + 1;
			l3_off += sizeof(*vlan);
		}
	}
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(l3, l3_off, data_end, t, li, pay);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(l3, l3_off, data_end, t, li, pay);
	if (arp && proto == bpf_htons(ETH_P_ARP))
		return parse_arp(l3, data_end, t);
	return -1;
}

#endif /* PKTSTAT_PARSE_BPF_H */
