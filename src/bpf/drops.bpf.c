// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * drops.bpf.c - the drop watcher (--drops): the kernel's kfree_skb
 * tracepoint with its drop reason, counted per (flow tuple, reason) and per
 * reason. It runs beside any mode's collector and never touches its maps.
 *
 * What counts: every kfree_skb event whose reason is not SKB_NOT_DROPPED_YET
 * or SKB_CONSUMED (their values come from the kernel's BTF at load:
 * cfg_reason_not_dropped, cfg_reason_consumed; -1 where the enum has no such
 * name). Normal frees go through consume_skb (its own tracepoint) and, since
 * SKB_CONSUMED exists, kfree_skb_reason(skb, SKB_CONSUMED) also fires
 * consume_skb, so those never arrive here; NOT_SPECIFIED is a real drop
 * without a more precise reason (kfree_skb()) and is counted.
 *
 * The packet: read with bpf_probe_read_kernel from skb->head at
 * network_header (IPv4, IPv6 with its extension headers walked as
 * parse.bpf.h does, whose protocol rules, l4_min_len and l4_fields it
 * reuses), ports (or ICMP, ESP, AH, GRE, OSPF fields) from the transport
 * header the IP header points at, both only inside the
 * linear data (head .. tail). Bytes: the IP packet's length from its
 * header (skb->len where that says none or the packet is not IP). Direction: FLOW_DIR_NONE (a free says
 * nothing about it); ifindex: skb->dev's.
 *
 * Filter: cfg_ifindex (0: any) and cfg_netns (0: any, else the inode of
 * skb->dev's network namespace): TC and XDP watch their interface; a drop
 * without a device then does not count.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <stdbool.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "drops.h"
#include "parse.bpf.h"

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct ns_common___d {
	unsigned int inum;
};
struct net___d {
	struct ns_common___d ns;
};
struct possible_net_t___d {
	struct net___d *net;
};
struct net_device___d {
	int ifindex;
	struct possible_net_t___d nd_net;
};
struct sk_buff___d {
	unsigned int len;
	__be16 protocol;
	__u16 network_header;
	unsigned int tail; /* sk_buff_data_t: an offset from head on 64-bit */
	unsigned char *head;
	struct net_device___d *dev;
};
#pragma clang attribute pop

const volatile __s64 cfg_reason_not_dropped = -1;
const volatile __s64 cfg_reason_consumed = -1;
const volatile __u32 cfg_ifindex = 0;
const volatile __u32 cfg_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* set by the engine before load */
	__type(key, struct drop_key);
	__type(value, struct drop_value);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* the kernels' enums have < 200 reasons */
	__type(key, __u32);
	__type(value, struct drop_value);
} reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_stats);
} drop_stats SEC(".maps");

static __always_inline void add(struct drop_value *v, __u64 len) {
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
}

/* Add to `map` at `key`, creating the entry; false when the map is full. */
static __always_inline bool bump(void *map, const void *key, __u64 len) {
	struct drop_value *v = bpf_map_lookup_elem(map, key), fresh = {1, len};

	if (v) {
		add(v, len);
		return true;
	}
	if (!bpf_map_update_elem(map, key, &fresh, BPF_NOEXIST))
		return true;
	v = bpf_map_lookup_elem(map, key); /* another CPU made it first */
	if (!v)
		return false;
	add(v, len);
	return true;
}

/* The ports (or ICMP type/code) at head + off, inside the datagram
 * (`room` bytes from there) and the linear data (up to `tail`). */
static __always_inline void skb_l4(unsigned char *head, __u32 off, __u32 tail, __u32 room,
                                   struct flow_tuple *t) {
	__u32 need = l4_min_len(t->proto);
	__u8 l4[4];

	if (!need || need > room || off + need > tail)
		return;
	if (bpf_probe_read_kernel(l4, sizeof(l4), head + off + l4_fields_at(t->proto)))
		return;
	l4_fields(l4, t);
}

static __always_inline int skb_ipv4(unsigned char *head, __u32 nh, __u32 tail, struct flow_tuple *t) {
	struct iphdr ip;
	__u32 hlen, tot_len;

	if (nh + sizeof(ip) > tail || bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	hlen = ip.ihl * 4;
	tot_len = bpf_ntohs(ip.tot_len);
	if (!tot_len)
		tot_len = 0xffff + hlen;
	if (tot_len < hlen)
		return -1;
	t->ipver = 4;
	t->proto = ip.protocol;
	((__u32 *)t->saddr)[2] = bpf_htonl(0xffff);
	((__u32 *)t->saddr)[3] = ip.saddr;
	((__u32 *)t->daddr)[2] = bpf_htonl(0xffff);
	((__u32 *)t->daddr)[3] = ip.daddr;
	if (!(ip.frag_off & bpf_htons(0x1fff)))
		skb_l4(head, nh + hlen, tail, tot_len - hlen, t);
	return ip.tot_len ? (int)tot_len : 0;
}

static __always_inline int skb_ipv6(unsigned char *head, __u32 nh, __u32 tail, struct flow_tuple *t) {
	struct ipv6hdr ip6;
	__u32 off = sizeof(ip6), plen;
	__u8 nexthdr, ext[4];

	if (nh + sizeof(ip6) > tail || bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
		return -1;
	if (ip6.version != 6)
		return -1;
	t->ipver = 6;
	__builtin_memcpy(t->saddr, &ip6.saddr, 16);
	__builtin_memcpy(t->daddr, &ip6.daddr, 16);
	nexthdr = ip6.nexthdr;
	plen = bpf_ntohs(ip6.payload_len);
	plen = plen ? plen + sizeof(ip6) : 0xffff;
	for (int i = 0; i < PARSE_MAX_EXTHDRS; i++) {
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING && nexthdr != NEXTHDR_FRAGMENT &&
		    nexthdr != NEXTHDR_AUTH && nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_HIP &&
		    nexthdr != NEXTHDR_SHIM6)
			break;
		if (nh + off + sizeof(ext) > tail ||
		    bpf_probe_read_kernel(ext, sizeof(ext), head + nh + off)) {
			t->proto = nexthdr;
			return ip6.payload_len ? (int)plen : 0;
		}
		if (nexthdr == NEXTHDR_FRAGMENT) {
			if (((__u16)ext[2] << 8 | ext[3]) & 0xfff8) { /* not the first fragment */
				t->proto = ext[0];
				return ip6.payload_len ? (int)plen : 0;
			}
			off += 8;
		} else if (nexthdr == NEXTHDR_AUTH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
	}
	t->proto = nexthdr;
	if (off < plen)
		skb_l4(head, nh + off, tail, plen - off, t);
	return ip6.payload_len ? (int)plen : 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(drops_kfree_skb, struct sk_buff___d *skb, void *location, unsigned int reason) {
	struct net_device___d *dev = BPF_CORE_READ(skb, dev);
	struct drop_key key = {};
	struct drop_stats *st;
	__u32 zero = 0, len, nh, tail;
	__be16 l3;
	int iplen = -1;

	if ((__s64)reason == cfg_reason_not_dropped || (__s64)reason == cfg_reason_consumed)
		return 0;
	if (dev) {
		key.tuple.ifindex = BPF_CORE_READ(dev, ifindex);
		if (bpf_core_field_exists(dev->nd_net.net))
			key.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	}
	if (cfg_ifindex && key.tuple.ifindex != cfg_ifindex)
		return 0;
	if (cfg_netns && key.netns != cfg_netns)
		return 0;
	st = bpf_map_lookup_elem(&drop_stats, &zero);
	if (!st)
		return 0;
	key.reason = reason;
	key.tuple.dir = FLOW_DIR_NONE;
	l3 = BPF_CORE_READ(skb, protocol);
	nh = BPF_CORE_READ(skb, network_header);
	tail = BPF_CORE_READ(skb, tail);
	if (nh != 0xffff) {
		unsigned char *head = BPF_CORE_READ(skb, head);

		if (l3 == bpf_htons(ETH_P_IP))
			iplen = skb_ipv4(head, nh, tail, &key.tuple);
		else if (l3 == bpf_htons(ETH_P_IPV6))
			iplen = skb_ipv6(head, nh, tail, &key.tuple);
	}
	/* bytes: the IP packet's length from its header; skb->len where the
	 * header has none (GSO super-packets, jumbograms) or is not IP */
	len = iplen > 0 ? (__u32)iplen : BPF_CORE_READ(skb, len);
	__sync_fetch_and_add(&st->packets, 1);
	__sync_fetch_and_add(&st->bytes, len);
	if (!bump(&reasons, &reason, len))
		__sync_fetch_and_add(&st->reason_overflow, 1);
	if (iplen < 0) {
		__sync_fetch_and_add(&st->unparsed, 1);
		return 0;
	}
	if (!bump(&drops, &key, len))
		__sync_fetch_and_add(&st->overflow, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
