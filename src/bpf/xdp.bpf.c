// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdp.bpf.c - the same parser and accounting as TC (count.bpf.h), attached at
 * XDP: every frame an interface receives, before the stack allocates an skb.
 * XDP sees ingress only. It never changes a frame's fate: XDP_PASS.
 *
 * Bytes are the whole frame. On kernels with bpf_xdp_get_buff_len (5.18+) the
 * engine sets cfg_buff_len and loads the program with BPF_F_XDP_HAS_FRAGS, so
 * a multi-buffer frame (jumbo, GRO/GSO on veth, generic XDP on a non-linear
 * skb) counts with its full length; elsewhere the length of the linear part
 * (data_end - data), which is the whole frame on single-buffer drivers.
 * The helper is a call per frame, as dear as the rest of the accounting on
 * some machines, and a frame has buffers beyond the linear part only when the
 * kernel flags it so: where the kernel lets the program read its own context
 * (bpf_cast_to_kern_ctx, 6.2+), the flag is read directly and the helper runs
 * for multi-buffer frames only.
 * The parser reads headers from the linear part only, where they always are.
 */
#define L7_XDP   /* l7_probe.bpf.h: the label read through bpf_xdp_load_bytes */
#define L7_NAMES /* l7_names.bpf.h: the flows' names */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "count.bpf.h"

/* Settings, written by the engine between open and load. */
const volatile bool cfg_buff_len = false; /* use bpf_xdp_get_buff_len (kernel has it) */

/* The kernel's struct xdp_buff, as far as it is read here (CO-RE). */
struct xdp_buff___pktstat {
	__u32 flags;
} __attribute__((preserve_access_index));

enum xdp_buff_flags___pktstat {
	XDP_FLAGS_HAS_FRAGS___pktstat = 1,
};

/* Weak: on kernels without it the program loads and it is NULL. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

static __always_inline __u64 frame_len(struct xdp_md *ctx, void *data, void *data_end) {
	if (!cfg_buff_len)
		return data_end - data;
	if (bpf_cast_to_kern_ctx &&
	    bpf_core_enum_value_exists(enum xdp_buff_flags___pktstat, XDP_FLAGS_HAS_FRAGS___pktstat)) {
		struct xdp_buff___pktstat *xdp = bpf_cast_to_kern_ctx(ctx);

		if (bpf_core_field_exists(xdp->flags) &&
		    !(xdp->flags &
		      bpf_core_enum_value(enum xdp_buff_flags___pktstat, XDP_FLAGS_HAS_FRAGS___pktstat)))
			return data_end - data; /* single buffer: the linear part is the frame */
	}
	return bpf_xdp_get_buff_len(ctx);
}

/* parse_frame's l2_proto for the frame `data`..`data_end`: 0 (Ethernet), or
 * on an L3 device (tun, wireguard under generic XDP: no link-layer header
 * and no skb->protocol here) the IP version of its first byte. */
static __always_inline __be16 xdp_l2(void *data, void *data_end) {
	__u8 *v = data;

	if (!cfg_l2_proto)
		return 0;
	if ((void *)(v + 1) <= data_end && (*v >> 4) == 6)
		return bpf_htons(ETH_P_IPV6);
	return bpf_htons(ETH_P_IP);
}

/* l7_probe.bpf.h: the frames' link layer, as xdp_count parses them. */
static __always_inline __be16 l7_frame_l2(void *ctx) {
	struct xdp_md *x = ctx;

	return xdp_l2((void *)(long)x->data, (void *)(long)x->data_end);
}

/* l7_names.bpf.h: the time the frame's flow is stamped with. */
static __always_inline __u64 l7_frame_ns(void *ctx) {
	return tick_ns();
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = frame_len(ctx, data, data_end);

	count_frame(ctx, data, data_end, len, true, 0, FLOW_DIR_INGRESS, ctx->ingress_ifindex,
	            xdp_l2(data, data_end));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
