/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow.h - the flow key and value shared verbatim by the eBPF programs and the
 * C++ engine. Fixed-width types only; every padding byte is named so that a
 * zeroed key hashes the same in the kernel and in user space.
 *
 * Addresses are 16 bytes: IPv6 as is, IPv4 in IPv4-mapped form
 * (::ffff:a.b.c.d). `ipver` says which family the packet really was, so an
 * IPv6 packet carrying a v4-mapped address is never merged with IPv4.
 * Ports are in host byte order. For ICMP/ICMPv6 the type is in `sport` and the
 * code in `dport` (as pktstat-bpf does).
 */
#ifndef PKTSTAT_FLOW_H
#define PKTSTAT_FLOW_H

#include <linux/types.h>

#ifdef __cplusplus
#define FLOW_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define FLOW_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

enum flow_dir {
	FLOW_DIR_INGRESS = 0,
	FLOW_DIR_EGRESS = 1,
	FLOW_DIR_NONE = 2, /* replay of a capture file: direction unknown */
	FLOW_DIR_NR = 3,
};

/* What a packet says about itself: the key of the TC, XDP and replay maps. */
struct flow_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto; /* IP protocol of the upper layer (after IPv6 extension headers) */
	__u8 dir;   /* enum flow_dir */
	__u8 ipver; /* 4 or 6 */
	__u8 _pad0;
	__u32 ifindex;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_tuple) == 44, "flow_tuple layout");

/* A flow as every mode reports it: the tuple plus who owns it (process and
 * cgroup modes fill the owner slots; packet modes leave them zero). */
struct flow_key {
	struct flow_tuple tuple;
	__u32 pid; /* TGID, 0 = unknown */
	__u64 cgroup_id;
	char comm[16];
};
FLOW_STATIC_ASSERT(sizeof(struct flow_key) == 72, "flow_key layout");

struct flow_value {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_value) == 32, "flow_value layout");

/* One row of a snapshot as it reaches NumPy (built by the C++ engine). */
struct flow_record {
	struct flow_key key;
	struct flow_value value;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_record) == 104, "flow_record layout");

/* Conservation counters, one set per direction: every packet a program sees
 * is counted in `packets`/`bytes` and then exactly once more, in a flow, in
 * `unparsed` (not an IP packet we can key) or in `overflow` (map full). */
struct dir_stats {
	__u64 packets;
	__u64 bytes;
	__u64 unparsed_packets;
	__u64 unparsed_bytes;
	__u64 overflow_packets;
	__u64 overflow_bytes;
};
FLOW_STATIC_ASSERT(sizeof(struct dir_stats) == 48, "dir_stats layout");

/* Replay passes the frame's timestamp and original length to the program in
 * __sk_buff->cb[] (BPF_PROG_TEST_RUN accepts cb in ctx_in). */
enum replay_cb {
	REPLAY_CB_TS_LO = 0,
	REPLAY_CB_TS_HI = 1,
	REPLAY_CB_WIRE_LEN = 2,
};

#endif /* PKTSTAT_FLOW_H */
