/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * count_owner.bpf.h - accounting keyed by the full struct flow_key (tuple +
 * pid + cgroup id + comm), for programs that know whose traffic it is:
 * cgroup_skb packets (cgroup.bpf.c parses them with parse.bpf.h) and process
 * mode's socket events, with the same conservation counters as count.bpf.h:
 * every packet is counted once more, in a flow, as unparsed or as overflow.
 */
#ifndef PKTSTAT_COUNT_OWNER_BPF_H
#define PKTSTAT_COUNT_OWNER_BPF_H

#define L7_KEY struct flow_key /* the look's names (l7_names.bpf.h) are keyed as the flows */
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

#endif /* PKTSTAT_COUNT_OWNER_BPF_H */
