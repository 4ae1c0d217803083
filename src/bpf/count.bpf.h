/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * count.bpf.h - the per-packet accounting shared by the packet programs (TC,
 * XDP, replay): one per-CPU array lookup for the conservation counters, one
 * per-CPU hash lookup for the flow, and an insert only for a new flow.
 *
 * Live flows are stamped with tick_ns() (tick_clock.bpf.h); replay with
 * the capture's timestamps.
 */
#ifndef PKTSTAT_COUNT_BPF_H
#define PKTSTAT_COUNT_BPF_H

#include <stdbool.h>

#include "parse.bpf.h"
#include "tick_clock.bpf.h"

#ifndef EEXIST
#define EEXIST 17
#endif

/* Settings, written by the engine between open and load. */
const volatile __be16 cfg_l2_proto = 0; /* non-zero: L3 device, frames start at IP */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536); /* resized by the engine (--max-entries) */
	__type(key, struct flow_tuple);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_DIR_NR);
	__type(key, __u32);
	__type(value, struct dir_stats);
} stats SEC(".maps");

/* `live`: stamp with tick_ns(); otherwise (replay) with `ts`. */
static __always_inline void count_frame(void *data, void *data_end, __u64 len, bool live, __u64 ts,
					__u32 dir, __u32 ifindex, __be16 l2_proto)
{
	struct flow_tuple key;
	struct flow_value *v;
	struct dir_stats *st;
	__u64 now;

	st = bpf_map_lookup_elem(&stats, &dir);
	if (!st) /* cannot happen: dir < FLOW_DIR_NR */
		return;
	st->packets++;
	st->bytes += len;

	__builtin_memset(&key, 0, sizeof(key));
	if (parse_frame(data, data_end, l2_proto, &key) < 0) {
		st->unparsed_packets++;
		st->unparsed_bytes += len;
		return;
	}
	key.dir = dir;
	key.ifindex = ifindex;
	now = live ? tick_ns() : ts;

	v = bpf_map_lookup_elem(&flows, &key);
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
	long err = bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);

	if (!err)
		return;
	if (err == -EEXIST) { /* another CPU inserted it meanwhile */
		v = bpf_map_lookup_elem(&flows, &key);
		if (v)
			goto hit;
	}
	st->overflow_packets++;
	st->overflow_bytes += len;
}

#endif /* PKTSTAT_COUNT_BPF_H */
