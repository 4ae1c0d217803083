// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * lean.bpf.c (bench only) - the leanest honest per-flow counter, the yardstick
 * of the hot-path benchmark: parse Ethernet, IPv4 or IPv6 and the ports of
 * TCP/UDP, then one per-CPU hash lookup and an in-place update (an insert for
 * a new flow). No VLAN tags, no extension headers, no fragment or length
 * checks, no timestamps, no totals: what pktstat-bpf does beyond this is the
 * price of its guarantees, and the benchmark holds it to 1.2x this cost.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct lean_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
};

struct lean_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lean_key);
	__type(value, struct lean_value);
} flows SEC(".maps");

static __always_inline void lean_count(void *data, void *data_end, __u64 len)
{
	struct ethhdr *eth = data;
	struct lean_key k = {};
	struct lean_value *v;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return;
		__builtin_memcpy(&k.saddr[12], &ip->saddr, 4);
		__builtin_memcpy(&k.daddr[12], &ip->daddr, 4);
		k.proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return;
		__builtin_memcpy(k.saddr, &ip6->saddr, 16);
		__builtin_memcpy(k.daddr, &ip6->daddr, 16);
		k.proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return;
	}
	if ((k.proto == IPPROTO_TCP || k.proto == IPPROTO_UDP) && l4 + 4 <= data_end) {
		k.sport = bpf_ntohs(((__be16 *)l4)[0]);
		k.dport = bpf_ntohs(((__be16 *)l4)[1]);
	}
	v = bpf_map_lookup_elem(&flows, &k);
	if (v) {
		v->packets++;
		v->bytes += len;
	} else {
		struct lean_value init = {.packets = 1, .bytes = len};

		bpf_map_update_elem(&flows, &k, &init, BPF_NOEXIST);
	}
}

SEC("tc")
int tc_lean(struct __sk_buff *skb)
{
	lean_count((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len);
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int xdp_lean(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	lean_count(data, data_end, data_end - data);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
