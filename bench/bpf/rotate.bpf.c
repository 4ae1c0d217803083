// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rotate.bpf.c (bench only) - many flows under BPF_PROG_TEST_RUN, which runs
 * one packet `repeat` times: before each run this program rewrites 4 bytes of
 * the packet (an address) with a flow index, then tail-calls the program under
 * test (slot 0 of `next_tc` or `next_xdp`: a program array belongs to one program
 * type), which is the unchanged object being measured. The
 * index walks 0..cfg_mask in turn, or is drawn from `zipf_idx` (a table of
 * indices with a Zipf distribution, filled by the benchmark). Its own cost is
 * in the floor: the same rewrite and a tail call into an empty program.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ZIPF_SLOTS 65536

const volatile __u32 cfg_off = 0;  /* offset of the 4 bytes to rewrite */
const volatile __u32 cfg_base = 0; /* their value for flow 0 (host order) */
const volatile __u32 cfg_mask = 0; /* flows - 1, flows a power of two */
const volatile bool cfg_zipf = false;

__u32 seq;

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} next_tc SEC(".maps"), next_xdp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZIPF_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} zipf_idx SEC(".maps");

static __always_inline void rotate(void *data, void *data_end)
{
	__u32 i = seq++, word;
	void *p = data + cfg_off;

	if (cfg_zipf) {
		__u32 slot = i & (ZIPF_SLOTS - 1);
		__u32 *z = bpf_map_lookup_elem(&zipf_idx, &slot);

		i = z ? *z : 0;
	}
	word = bpf_htonl(cfg_base + (i & cfg_mask));
	if (p + 4 <= data_end)
		__builtin_memcpy(p, &word, 4);
}

SEC("tc")
int tc_rotate(struct __sk_buff *skb)
{
	rotate((void *)(long)skb->data, (void *)(long)skb->data_end);
	bpf_tail_call(skb, &next_tc, 0);
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int xdp_rotate(struct xdp_md *ctx)
{
	rotate((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	bpf_tail_call(ctx, &next_xdp, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
