/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tick_clock.bpf.h - CLOCK_MONOTONIC for flow timestamps, shared by every
 * live program (TC, XDP, cgroup, process).
 *
 * Live programs stamp flows with CLOCK_MONOTONIC
 * (bpf_ktime_get_ns), read at most once per CPU per kernel tick. A clock read
 * is a helper call into the clocksource and costs about as much as all the
 * rest of a packet on common machines (more where return-thunk mitigations
 * make every call dear), while jiffies and per-CPU array lookups are inlined
 * by the verifier: so each CPU keeps the value it read at its first flow
 * packet of the current tick and stamps the tick's later packets with it.
 * A first/last seen is therefore at most one tick (1/HZ: 4 ms at HZ=250)
 * before the packet's arrival, and never after it. Replay stamps with the
 * capture's timestamps.
 */
#ifndef PKTSTAT_TICK_CLOCK_BPF_H
#define PKTSTAT_TICK_CLOCK_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct tick_clock {
	__u64 jiffies; /* the tick `ns` was read in */
	__u64 ns;      /* bpf_ktime_get_ns() at this CPU's first use in that tick */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tick_clock);
} tick_clock SEC(".maps");

/* CLOCK_MONOTONIC, read at most once per tick on this CPU (see above). */
static __always_inline __u64 tick_ns(void) {
	__u32 zero = 0;
	struct tick_clock *c = bpf_map_lookup_elem(&tick_clock, &zero);
	__u64 j = bpf_jiffies64();

	if (!c) /* cannot happen: one entry */
		return bpf_ktime_get_ns();
	if (c->jiffies != j) {
		c->ns = bpf_ktime_get_ns();
		c->jiffies = j;
	}
	return c->ns;
}

#endif /* PKTSTAT_TICK_CLOCK_BPF_H */
