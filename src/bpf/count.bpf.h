/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * count.bpf.h - the per-packet accounting shared by the packet programs (TC,
 * XDP, replay): one per-CPU array lookup for the conservation counters, one
 * per-CPU hash lookup for the flow, and an insert only for a new flow; TCP
 * segments also go through the connection's health (tcp_health.bpf.h).
 *
 * Live flows are stamped with tick_ns() (tick_clock.bpf.h); replay with
 * the capture's timestamps.
 */
#ifndef PKTSTAT_COUNT_BPF_H
#define PKTSTAT_COUNT_BPF_H

#include <stdbool.h>

#define L7_KEY struct flow_tuple /* the look's names (l7_names.bpf.h) are keyed as the flows */
#include "flow_add.bpf.h"
#include "parse.bpf.h"
#include "tick_clock.bpf.h"

/* Settings, written by the engine between open and load. */
const volatile __be16 cfg_l2_proto = 0; /* non-zero: L3 device, frames start at IP */
const volatile bool cfg_arp = true;     /* key ARP frames (false: --no-arp, they are unparsed) */

FLOW_TABLE(struct flow_tuple); /* flows, flows1, flow_sides (flow_add.bpf.h) */

#include "tcp_health.bpf.h"

/* `live`: stamp with tick_ns(); otherwise (replay) with `ts`. `ctx`: the
 * program's context (l7_probe.bpf.h). */
static __always_inline void count_frame(void *ctx, void *data, void *data_end, __u64 len, bool live, __u64 ts,
                                        __u32 dir, __u32 ifindex, __be16 l2_proto) {
	struct flow_tuple key;
	struct dir_stats *st;
	__u32 side = current_side();
	struct l4_info li;
	__u64 now;

	st = side_stats(side, dir);
	if (!st) /* cannot happen: dir < FLOW_DIR_NR */
		return;
	st->packets++;
	st->bytes += len;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&li, 0, sizeof(li));
	if (parse_frame(data, data_end, l2_proto, cfg_arp, &key, &li, false) < 0) {
		st->unparsed_packets++;
		st->unparsed_bytes += len;
		return;
	}
	key.dir = dir;
	key.ifindex = ifindex;
	now = live ? tick_ns() : ts;
	tcp_health(ctx, &key, &li, side, live, ts);

	add_to_side(side, &key, len, now, ctx, &li, st, live);
}

#endif /* PKTSTAT_COUNT_BPF_H */
