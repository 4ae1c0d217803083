/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * drops.h - what the drop watcher (drops.bpf.c, --drops) counts, shared by
 * the kernel program and the C++ engine (src/cpp/drop_watcher.*). Kept apart
 * from flow.h: drops are their own map, joined to flows in Python by the
 * flow tuple.
 */
#ifndef PKTSTAT_DROPS_H
#define PKTSTAT_DROPS_H

#include "flow.h"

/* One flow's drops for one reason. tuple.dir is FLOW_DIR_NONE (a freed skb
 * does not say which way it went), tuple.ifindex is skb->dev's (0 without a
 * device); netns the inode of that device's network namespace (0: none). */
struct drop_key {
	struct flow_tuple tuple;
	__u32 reason; /* enum skb_drop_reason of the running kernel */
	__u32 netns;
};
FLOW_STATIC_ASSERT(sizeof(struct drop_key) == 52, "drop_key layout");

struct drop_value {
	__u64 packets;
	__u64 bytes; /* the IP packet length (skb->len where there is none) */
};
FLOW_STATIC_ASSERT(sizeof(struct drop_value) == 16, "drop_value layout");

/* Every drop counted (after the interface filter) is in `packets`; of those,
 * `unparsed` had no IP header to key (they are only in the per-reason
 * totals), `overflow` found the per-flow map full (likewise). */
struct drop_stats {
	__u64 packets;
	__u64 bytes;
	__u64 unparsed;
	__u64 overflow;
	__u64 reason_overflow; /* the per-reason map was full (not in reason totals) */
};
FLOW_STATIC_ASSERT(sizeof(struct drop_stats) == 40, "drop_stats layout");

#endif /* PKTSTAT_DROPS_H */
