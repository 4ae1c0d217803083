/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * count_owner.bpf.h - accounting keyed by the full struct flow_key (tuple +
 * pid + cgroup id + comm), for programs that know whose traffic it is:
 * cgroup_skb packets (count_owned_frame) and process mode's socket events
 * (add_owned_flow). Same parser (parse.bpf.h) and the
 * same conservation counters as count.bpf.h: every packet is counted once
 * more, in a flow, as unparsed or as overflow.
 */
#ifndef PKTSTAT_COUNT_OWNER_BPF_H
#define PKTSTAT_COUNT_OWNER_BPF_H

#include "flow_add.bpf.h"
#include "parse.bpf.h"
#include "tick_clock.bpf.h"

FLOW_TABLE(struct flow_key); /* flows, flows1, flow_sides (flow_add.bpf.h) */

/* Count `len` bytes of one packet (or event) in the flow `key` of side
 * `side`, or as overflow in `st` (that side's counters) when the table has
 * no room for a new flow. `ctx` and `li` as for add_to_flow. */
static __always_inline void add_owned_flow(__u32 side, struct flow_key *key, __u64 len, __u64 now, void *ctx,
                                           const struct l4_info *li, struct dir_stats *st) {
	add_to_side(side, key, len, now, ctx, li, st, true);
}

/* `l2_proto` as for parse_frame. `owner` may be NULL (unknown owner). */
static __always_inline void count_owned_frame(void *ctx, void *data, void *data_end, __u64 len, __u64 now,
                                              __u32 dir, __be16 l2_proto, const struct sock_owner *owner,
                                              __u64 cgroup_id) {
	struct flow_key key;
	struct dir_stats *st;
	__u32 side = current_side();
	struct l4_info li;

	st = side_stats(side, dir);
	if (!st)
		return;
	st->packets++;
	st->bytes += len;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&li, 0, sizeof(li));
	if (parse_frame(data, data_end, l2_proto, false, &key.tuple, &li) < 0) {
		st->unparsed_packets++;
		st->unparsed_bytes += len;
		return;
	}
	key.tuple.dir = dir;
	key.cgroup_id = cgroup_id;
	if (owner) {
		key.pid = owner->pid;
		__builtin_memcpy(key.comm, owner->comm, sizeof(key.comm));
	}

	add_owned_flow(side, &key, len, now, ctx, &li, st);
}

#endif /* PKTSTAT_COUNT_OWNER_BPF_H */
