// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tc.bpf.c - the classifier counting every frame per flow, attached to TC
 * ingress and egress (TCX or legacy clsact), and run by the replay engine
 * through BPF_PROG_TEST_RUN. It never changes a packet's fate: it returns
 * TC_ACT_UNSPEC (TCX_NEXT), so the next program or the default action runs.
 */
#define L7_SKB   /* l7_probe.bpf.h: the label read through bpf_skb_load_bytes */
#define L7_NAMES /* l7_names.bpf.h: the flows' names */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "count.bpf.h"

/* Replay: timestamp and original frame length come from __sk_buff->cb[]
 * (see enum replay_cb), direction is unknown and there is no interface. */
const volatile bool cfg_replay = false;

/* l7_probe.bpf.h: the frames' link layer, as tc_count parses them. */
static __always_inline __be16 l7_frame_l2(void *ctx) {
	return cfg_replay || !cfg_l2_proto ? 0 : ((struct __sk_buff *)ctx)->protocol;
}

/* l7_names.bpf.h: the time the frame's flow is stamped with. */
static __always_inline __u64 l7_frame_ns(void *ctx) {
	struct __sk_buff *skb = ctx;

	if (cfg_replay)
		return ((__u64)skb->cb[REPLAY_CB_TS_HI] << 32) | skb->cb[REPLAY_CB_TS_LO];
	return tick_ns();
}

static __always_inline int tc_count(struct __sk_buff *skb, __u32 dir) {
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (cfg_replay) {
		__u64 ts = ((__u64)skb->cb[REPLAY_CB_TS_HI] << 32) | skb->cb[REPLAY_CB_TS_LO];

		count_frame(skb, data, data_end, skb->cb[REPLAY_CB_WIRE_LEN], false, ts, FLOW_DIR_NONE, 0, 0);
	} else {
		count_frame(skb, data, data_end, skb->len, true, 0, dir, skb->ifindex,
		            cfg_l2_proto ? skb->protocol : 0);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb) {
	return tc_count(skb, FLOW_DIR_INGRESS);
}

SEC("tc")
int tc_egress(struct __sk_buff *skb) {
	return tc_count(skb, FLOW_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
