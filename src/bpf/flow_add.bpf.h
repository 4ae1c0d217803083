/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow_add.bpf.h - what every accounting header shares (count.bpf.h, whose
 * flows are keyed by the tuple, count_owner.bpf.h by the full flow key): the
 * conservation counters per direction, and one packet (or socket event) into
 * a per-CPU flow hash. Inlined, `map` and `key` are the caller's own, so the
 * per-packet path is one lookup, and an insert only for a new flow.
 *
 * Draining: every flow map comes in two sides (`flows`, `flows1`, reached
 * through the ARRAY_OF_MAPS `flow_sides`), and so do the conservation
 * counters (`stats`, side s at s * FLOW_DIR_NR + dir). A program run reads
 * `flow_side` once and counts into that side's flow map and counters. (The
 * side's map from the inlined array-of-maps lookup and a branch between the
 * two named maps cost the same per packet within the noise, and both the
 * same as the one-sided program before: bench/bench_drain.py,
 * docs/performance.md. The lookup keeps one copy of the flow update, so the
 * program is about 10% shorter.) At each drain the engine flips `flow_side` (mmapped), waits for
 * every program run that may have read the old value (an update of the
 * ARRAY_OF_MAPS `drain_sync` returns after an RCU grace period, and these
 * programs are all non-sleepable), then reads and empties the old side: each
 * increment lands in exactly one interval, and within an interval
 * seen = flows + unparsed + overflow holds exactly.
 */
#ifndef PKTSTAT_FLOW_ADD_BPF_H
#define PKTSTAT_FLOW_ADD_BPF_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "l7_probe.bpf.h"
#include "parse.bpf.h"

#ifndef EEXIST
#define EEXIST 17
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FLOW_DIR_NR); /* side 0, then side 1 */
	__type(key, __u32);
	__type(value, struct dir_stats);
} stats SEC(".maps");

/* The side programs count into (0 or 1): its own data section, so the engine
 * finds it by name (".data.flow_side") and flips it through the mmap. */
__u32 flow_side SEC(".data.flow_side") = 0;

/* Updated by the engine only, for the wait of a drain (never used here). */
struct drain_sync_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct drain_sync_inner);
} drain_sync SEC(".maps");

/* The side of this program run: read once, then used for the flow map and
 * the counters alike. */
static __always_inline __u32 current_side(void) {
	return *(volatile __u32 *)&flow_side & 1;
}

/* The conservation counters of `side` and `dir` (dir < FLOW_DIR_NR). */
static __always_inline struct dir_stats *side_stats(__u32 side, __u32 dir) {
	__u32 i = side * FLOW_DIR_NR + dir;

	return bpf_map_lookup_elem(&stats, &i);
}

/* A new flow's first value is built here, not on the stack (the stack is
 * shared with the calls of the look, l7_probe.bpf.h, 512 bytes in all). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_value);
} flow_init SEC(".maps");

/* The flow maps' layout: a per-CPU hash. PKTSTAT_BENCH_SHARED_HASH
 * (bench/bench_layout.py only, never shipped): the layout it was measured
 * against, one hash shared by the CPUs whose counts add_to_flow updates with
 * atomic adds (docs/performance.md, "Map layout"). */
#ifdef PKTSTAT_BENCH_SHARED_HASH
#define FLOW_SHARED 1
#define FLOW_MAP_TYPE BPF_MAP_TYPE_HASH
#else
#define FLOW_SHARED 0
#define FLOW_MAP_TYPE BPF_MAP_TYPE_PERCPU_HASH
#endif

/* The TCP fields of a flow value for a packet with flag byte `fl` (0: not
 * TCP, or no complete TCP header). Written only where they change: on an
 * established flow (ACK, PSH) the OR is already there and no count moves, so
 * the packet costs one load and compare of the flag byte. */
static __always_inline void add_tcp_flags(struct flow_value *v, __u8 fl) {
	if (fl & ~v->tcp_flags)
		v->tcp_flags |= fl;
	if (fl & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)) {
		if (fl & TCP_FLAG_SYN)
			v->syn_packets++;
		if (fl & TCP_FLAG_FIN)
			v->fin_packets++;
		if (fl & TCP_FLAG_RST)
			v->rst_packets++;
	}
}

/* Count `len` bytes at `now`, with what the parser found in `li` (the TCP
 * flag byte), in the flow `key` of `map`, or as overflow in `st` when the
 * table has no room for a new flow. `ctx` is the program's context (for
 * l7_peek, while the flow is still looking); `li` NULL: no packet (process
 * mode's socket events).
 * `in_order` (a constant where it is inlined): stamps only grow, as a live
 * clock's do; otherwise (replay: a capture file need not be in time order)
 * first and last seen are the earliest and the latest stamp. */
static __always_inline void add_to_flow(void *map, const void *key, __u64 len, __u64 now, void *ctx,
                                        const struct l4_info *li, struct dir_stats *st, bool in_order) {
	struct flow_value *v = bpf_map_lookup_elem(map, key);
	__u8 fl = li ? li->tcp_flags : 0;

	if (v) {
	hit:
		if (FLOW_SHARED) { /* one value for every CPU: its counts by atomic adds */
			__sync_fetch_and_add(&v->packets, 1);
			__sync_fetch_and_add(&v->bytes, len);
			if (now > v->last_seen_ns)
				v->last_seen_ns = now;
			add_tcp_flags(v, fl);
			if (li && li->retrans) {
				__sync_fetch_and_add(&v->health.retrans_packets, 1);
				__sync_fetch_and_add(&v->health.retrans_bytes, len);
			}
			if (L7_LOOKS && v->app_tries < L7_BUDGET)
				l7_note(v, l7_peek(ctx, v->tcp_flags & TCP_FLAG_SYN, v->app, key));
			return;
		}
		/* !packets: this CPU's first packet of a flow another CPU made */
		if (!v->packets || (!in_order && now < v->first_seen_ns))
			v->first_seen_ns = now;
		v->packets++;
		v->bytes += len;
		if (in_order || now > v->last_seen_ns)
			v->last_seen_ns = now;
		add_tcp_flags(v, fl);
		if (li && li->retrans) {
			v->health.retrans_packets++;
			v->health.retrans_bytes += len;
		}
		if (L7_LOOKS && v->app_tries < L7_BUDGET)
			l7_note(v, l7_peek(ctx, v->tcp_flags & TCP_FLAG_SYN, v->app, key));
		return;
	}

	__u32 zero = 0;
	struct flow_value *init = bpf_map_lookup_elem(&flow_init, &zero);
	long err;

	if (!init) /* cannot happen */
		goto full;
	__builtin_memset(init, 0, sizeof(*init));
	init->packets = 1;
	init->bytes = len;
	init->first_seen_ns = now;
	init->last_seen_ns = now;
	init->syn_packets = !!(fl & TCP_FLAG_SYN);
	init->fin_packets = !!(fl & TCP_FLAG_FIN);
	init->rst_packets = !!(fl & TCP_FLAG_RST);
	init->tcp_flags = fl;
	if (li && li->retrans) {
		init->health.retrans_packets = 1;
		init->health.retrans_bytes = len;
	}
	if (L7_LOOKS)
		l7_note(init, l7_peek(ctx, fl & TCP_FLAG_SYN, 0, key));
	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (!err)
		return;
	if (err == -EEXIST) { /* another CPU inserted it meanwhile */
		v = bpf_map_lookup_elem(map, key);
		if (v)
			goto hit;
	}
full:
	st->overflow_packets++;
	st->overflow_bytes += len;
}

/* The two sides of a flow table keyed by `key_type`: `flows` (side 0),
 * `flows1` (side 1), and `flow_sides`, the array of maps the programs take
 * the side's map from (filled at load). The template of flow_sides' values
 * is a map libbpf makes and frees at load (a preallocated per-CPU hash):
 * one entry, since the kernel does not compare a hash inner map's size
 * (Linux 5.10+). */
#define FLOW_TABLE(key_type)                                                                                 \
	struct flow_side_template { /* only the shape flow_sides' values must have */                        \
		__uint(type, FLOW_MAP_TYPE);                                                                 \
		__uint(max_entries, 1);                                                                      \
		__type(key, key_type);                                                                       \
		__type(value, struct flow_value);                                                            \
	};                                                                                                   \
	struct {                                                                                             \
		__uint(type, FLOW_MAP_TYPE);                                                                 \
		__uint(max_entries, 65536); /* resized by the engine (--max-entries) */                      \
		__type(key, key_type);                                                                       \
		__type(value, struct flow_value);                                                            \
	} flows SEC(".maps"), flows1 SEC(".maps");                                                           \
	struct {                                                                                             \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                                    \
		__uint(max_entries, 2);                                                                      \
		__type(key, __u32);                                                                          \
		__array(values, struct flow_side_template);                                                  \
	} flow_sides SEC(".maps") = {                                                                        \
	    .values = {(void *)&flows, (void *)&flows1},                                                     \
	}

/* add_to_flow into side `side` of the FLOW_TABLE (a missing side cannot
 * happen: counted as overflow, so the packet is still counted once).
 * PKTSTAT_BENCH_SIDE_BRANCH (bench/bench_drain.py only, never shipped): the
 * alternative it was measured against, a branch between the two named maps. */
#ifdef PKTSTAT_BENCH_SIDE_BRANCH
#define add_to_side(side, key, len, now, ctx, li, st, in_order)                                              \
	do {                                                                                                 \
		if (side)                                                                                    \
			add_to_flow(&flows1, key, len, now, ctx, li, st, in_order);                          \
		else                                                                                         \
			add_to_flow(&flows, key, len, now, ctx, li, st, in_order);                           \
	} while (0)
#else
#define add_to_side(side, key, len, now, ctx, li, st, in_order)                                              \
	do {                                                                                                 \
		__u32 side_ = (side);                                                                        \
		void *map_ = bpf_map_lookup_elem(&flow_sides, &side_);                                       \
		if (map_) {                                                                                  \
			add_to_flow(map_, key, len, now, ctx, li, st, in_order);                             \
		} else {                                                                                     \
			(st)->overflow_packets++;                                                            \
			(st)->overflow_bytes += (len);                                                       \
		}                                                                                            \
	} while (0)
#endif

#endif /* PKTSTAT_FLOW_ADD_BPF_H */
