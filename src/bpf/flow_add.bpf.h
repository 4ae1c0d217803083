/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow_add.bpf.h - what every accounting header shares (count.bpf.h, whose
 * flows are keyed by the tuple, count_owner.bpf.h by the full flow key): the
 * conservation counters per direction, and one packet (or socket event) into
 * a per-CPU flow hash. Inlined, `map` and `key` are the caller's own, so the
 * per-packet path is one lookup, and an insert only for a new flow.
 */
#ifndef PKTSTAT_FLOW_ADD_BPF_H
#define PKTSTAT_FLOW_ADD_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"

#ifndef EEXIST
#define EEXIST 17
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_DIR_NR);
	__type(key, __u32);
	__type(value, struct dir_stats);
} stats SEC(".maps");

/* Count `len` bytes at `now` in the flow `key` of `map`, or as overflow in
 * `st` when the table has no room for a new flow. */
static __always_inline void add_to_flow(void *map, const void *key, __u64 len, __u64 now, struct dir_stats *st)
{
	struct flow_value *v = bpf_map_lookup_elem(map, key);

	if (v) {
hit:
		if (!v->packets) /* this CPU's first packet of a flow another CPU made */
			v->first_seen_ns = now;
		v->packets++;
		v->bytes += len;
		v->last_seen_ns = now;
		return;
	}

	struct flow_value init = {
		.packets = 1,
		.bytes = len,
		.first_seen_ns = now,
		.last_seen_ns = now,
	};
	long err = bpf_map_update_elem(map, key, &init, BPF_NOEXIST);

	if (!err)
		return;
	if (err == -EEXIST) { /* another CPU inserted it meanwhile */
		v = bpf_map_lookup_elem(map, key);
		if (v)
			goto hit;
	}
	st->overflow_packets++;
	st->overflow_bytes += len;
}

#endif /* PKTSTAT_FLOW_ADD_BPF_H */
