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
 * The parser reads headers from the linear part only, where they always are.
 */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "count.bpf.h"

/* Settings, written by the engine between open and load. */
const volatile bool cfg_buff_len = false; /* use bpf_xdp_get_buff_len (kernel has it) */

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__be16 l2 = 0;

	if (cfg_buff_len)
		len = bpf_xdp_get_buff_len(ctx);
	if (cfg_l2_proto) {
		/* L3 device (tun, wireguard under generic XDP): no link-layer
		 * header and no skb->protocol here, so the IP version decides. */
		__u8 *v = data;

		if ((void *)(v + 1) <= data_end)
			l2 = (*v >> 4) == 6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
		else
			l2 = bpf_htons(ETH_P_IP);
	}
	count_frame(data, data_end, len, bpf_ktime_get_ns(), FLOW_DIR_INGRESS, ctx->ingress_ifindex, l2);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
