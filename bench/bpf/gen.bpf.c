// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * gen.bpf.c (bench only) - the traffic generator of the datapath benchmark.
 * Run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: every run is a
 * real frame that XDP_REDIRECT transmits on cfg_ifindex (one end of a veth
 * pair), so the other end receives it as from a wire. With cfg_flows > 1 the
 * low three bytes of the IPv4 source address are rewritten from a counter,
 * cycling through cfg_flows distinct flows (a power of two, at most 2^24).
 * Checksums are left stale: the frames carry a foreign destination MAC, so the
 * receiver's stack drops them (PACKET_OTHERHOST) right after TC ingress.
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 cfg_ifindex = 0;
const volatile __u32 cfg_flows = 1;
const volatile __u32 cfg_saddr_off = 26; /* IPv4 source address (Ethernet + 12) */

__u32 seq;

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	if (cfg_flows > 1) {
		__u32 i = seq++ & (cfg_flows - 1);
		__u8 *a = data + cfg_saddr_off;

		if ((void *)(a + 4) > data_end)
			return XDP_ABORTED;
		a[1] = i >> 16;
		a[2] = i >> 8;
		a[3] = i;
	}
	return bpf_redirect(cfg_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
