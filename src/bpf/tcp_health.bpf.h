/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tcp_health.bpf.h - retransmissions and round-trip times of TCP flows, read
 * passively from the segments the packet programs (TC, XDP, replay) count.
 *
 * A connection seen at one hook is tracked in `tcp_track`, one entry for
 * both of its directions (the key orders the two endpoints), shared by the
 * CPUs (races between CPUs on one connection can lose an update; they never
 * corrupt a count). Each direction keeps:
 *  - the sequence number after the highest it has carried (`next_seq`): a
 *    segment that occupies sequence space (payload, SYN or FIN) and starts
 *    before it is a retransmission, except a keep-alive (one byte just
 *    before it); a SYN with a new initial sequence number (a new connection
 *    on the same ports) starts the direction again;
 *  - one timed TSval at a time (RFC 7323 timestamps): the first segment
 *    occupying sequence space with a TSval newer than the last timed one
 *    starts the clock; a segment of the other direction whose TSecr echoes
 *    it stops the clock: the round trip of the timed direction's flow, from
 *    this hook to the far end and back. An echo of a newer TSval (the timed
 *    segment's echo was not seen) drops the clock, and so does a
 *    retransmission carrying the timed TSval (the echo may be of either
 *    copy). Segments without the timestamp option are not timed.
 * `pair` keeps apart what one hook sees twice (on `lo` every packet passes
 * egress and then ingress): a direction's segments at egress are matched
 * with the other direction's at ingress, and the other way round.
 * The map is an LRU: a connection pushed out only starts again (no sample
 * and no retransmission until it has carried data again).
 */
#ifndef PKTSTAT_TCP_HEALTH_BPF_H
#define PKTSTAT_TCP_HEALTH_BPF_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "l7_probe.bpf.h" /* L7_CTX: the program's context type */
#include "parse.bpf.h"

/* Included after FLOW_TABLE (count.bpf.h): round trips go into its sides. */

/* Track TCP health (the engine clears it to measure the hot path without). */
const volatile bool cfg_tcp_health = true;

struct tcp_track_key {
	__u8 a[16]; /* the endpoint that orders first */
	__u8 b[16];
	__u16 aport;
	__u16 bport;
	__u8 ipver;
	__u8 pair; /* 0, 1: (a's direction, dir) pairing; 2: no direction (replay) */
	__u8 _pad[2];
	__u32 ifindex;
};

struct tcp_side {
	__u32 next_seq; /* after the highest sequence number carried */
	__u32 ts_val;   /* the TSval being timed */
	__u64 ts_at_ns; /* when it passed */
	__u32 last_val; /* the last TSval timed */
	__u8 seq_known; /* next_seq holds */
	__u8 timing;    /* ts_val is being timed */
	__u8 ts_known;  /* last_val holds */
	__u8 _pad;
};

struct tcp_track {
	struct tcp_side side[2]; /* a's, b's */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tcp_track_key);
	__type(value, struct tcp_track);
} tcp_track SEC(".maps");

static __always_inline __u32 tcp_be32(const __u8 *p) {
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return bpf_ntohl(v);
}

/* The timestamp option of the TCP header at `th` (`hl` bytes): its TSval
 * and TSecr, or false. Linux's data segments carry it first, after two
 * NOPs; other layouts are walked (at most 10 options). */
static __always_inline bool tcp_ts_option(const __u8 *th, __u32 hl, void *data_end, __u32 *val, __u32 *ecr) {
	const __u8 *o = th + 20, *p;
	__u32 n = hl - 20, i = 0, len;

	if (hl < 30)
		return false;
	if ((void *)(o + 12) <= data_end && o[0] == 1 && o[1] == 1 && o[2] == 8 && o[3] == 10) {
		*val = tcp_be32(o + 4);
		*ecr = tcp_be32(o + 8);
		return true;
	}
	for (int k = 0; k < 10; k++) {
		if (i + 10 > n)
			return false;
		p = o + (i & 31);
		if ((void *)(p + 10) > data_end)
			return false;
		if (p[0] == 0) /* end of options */
			return false;
		if (p[0] == 1) { /* NOP */
			i++;
			continue;
		}
		len = p[1];
		if (p[0] == 8 && len == 10) {
			*val = tcp_be32(p + 2);
			*ecr = tcp_be32(p + 6);
			return true;
		}
		if (len < 2)
			return false;
		i += len;
	}
	return false;
}

/* Is address `x` before `y` (any fixed order will do)? */
static __always_inline bool tcp_addr_before(const __u8 *x, const __u8 *y) {
	const __u64 *a = (const __u64 *)x, *b = (const __u64 *)y;

	if (a[0] != b[0])
		return a[0] < b[0];
	return a[1] < b[1];
}

/* Put a round trip `rtt` of the reverse flow of `key` into the flow side
 * `side`: the reverse flow is the one whose TSval was timed. A reverse flow
 * not in that side (it carried nothing since the last drain) keeps no
 * sample. */
static __always_inline void tcp_add_rtt(__u32 side, const struct flow_tuple *key, __u64 rtt) {
	struct flow_tuple r = *key;
	struct flow_value *v;
	void *map;

	map = bpf_map_lookup_elem(&flow_sides, &side);
	if (!map)
		return;
	__builtin_memcpy(r.saddr, key->daddr, 16);
	__builtin_memcpy(r.daddr, key->saddr, 16);
	r.sport = key->dport;
	r.dport = key->sport;
	if (key->dir < FLOW_DIR_NONE)
		r.dir = key->dir ^ 1;
	v = bpf_map_lookup_elem(map, &r);
	if (!v)
		return;
	if (!v->health.rtt_samples || rtt < v->health.rtt_min_ns)
		v->health.rtt_min_ns = rtt;
	if (rtt > v->health.rtt_max_ns)
		v->health.rtt_max_ns = rtt;
	v->health.rtt_sum_ns += rtt;
	v->health.rtt_samples++;
}

/* The TCP segment `key` of the frame of `ctx`, parsed into `li`, counted in
 * flow side `side`: sets li->retrans, and puts a round trip into the
 * reverse flow when the segment echoes a timed TSval of it. `live`: the
 * time is the clock's (bpf_ktime_get_ns, read only when a clock starts or
 * stops); otherwise `ts` (replay). A function of its own: verified once,
 * whatever path the parser took to it. */
__noinline int tcp_health_look(L7_CTX *ctx, const struct flow_tuple *key, struct l4_info *li, __u32 side_live,
                               __u64 ts) {
	struct tcp_track_key tk;
	struct tcp_side *me, *peer;
	struct tcp_track *tr;
	void *data, *data_end;
	const __u8 *th;
	__u32 off, seq, seg, val = 0, ecr = 0;
	__u8 fl;
	bool has_ts, first, swap;

	bool live = side_live & 2;
	__u32 side = side_live & 1;

	if (!ctx || !key || !li)
		return 0;
	off = li->l4_off;
	fl = li->tcp_flags;
	if (!li->tcp_hl || off > 4096)
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	th = data + off;
	if ((void *)(th + 20) > data_end)
		return 0;
	seq = tcp_be32(th + 4);
	seg = li->pay_len + !!(fl & TCP_FLAG_SYN) + !!(fl & TCP_FLAG_FIN);
	has_ts = tcp_ts_option(th, li->tcp_hl, data_end, &val, &ecr);
	if (!seg && !(has_ts && (fl & TCP_FLAG_ACK) && ecr))
		return 0; /* neither carries sequence space nor echoes: nothing to track */

	swap = tcp_addr_before(key->daddr, key->saddr) ||
	       (!tcp_addr_before(key->saddr, key->daddr) && key->dport < key->sport);
	__builtin_memset(&tk, 0, sizeof(tk));
	if (swap) {
		__builtin_memcpy(tk.a, key->daddr, 16);
		__builtin_memcpy(tk.b, key->saddr, 16);
		tk.aport = key->dport;
		tk.bport = key->sport;
	} else {
		__builtin_memcpy(tk.a, key->saddr, 16);
		__builtin_memcpy(tk.b, key->daddr, 16);
		tk.aport = key->sport;
		tk.bport = key->dport;
	}
	tk.ipver = key->ipver;
	tk.pair = key->dir >= FLOW_DIR_NONE ? 2 : (swap ^ key->dir) & 1;
	tk.ifindex = key->ifindex;

	tr = bpf_map_lookup_elem(&tcp_track, &tk);
	if (!tr) {
		struct tcp_track init = {};

		if (!seg)
			return 0;
		bpf_map_update_elem(&tcp_track, &tk, &init, BPF_NOEXIST);
		tr = bpf_map_lookup_elem(&tcp_track, &tk);
		if (!tr)
			return 0;
	}
	me = swap ? &tr->side[1] : &tr->side[0];
	peer = swap ? &tr->side[0] : &tr->side[1];

	if (seg) {
		__u32 end = seq + seg;

		first = !me->seq_known || ((fl & TCP_FLAG_SYN) && seq != me->next_seq - 1);
		if (first) { /* the direction's first segment, or a new connection's SYN */
			me->next_seq = end;
			me->seq_known = 1;
			me->timing = 0;
			me->ts_known = 0;
		} else {
			if ((__s32)(seq - me->next_seq) < 0 &&
			    !(seg == 1 && seq == me->next_seq - 1 && !(fl & (TCP_FLAG_SYN | TCP_FLAG_FIN))))
				li->retrans = 1;
			if ((__s32)(end - me->next_seq) > 0)
				me->next_seq = end;
		}
		if (li->retrans && me->timing && has_ts && val == me->ts_val)
			me->timing = 0; /* two copies carry the timed TSval: the echo may be of either */
		if (has_ts && !li->retrans && !me->timing &&
		    (!me->ts_known || (__s32)(val - me->last_val) > 0)) {
			me->ts_val = val;
			me->last_val = val;
			me->ts_known = 1;
			me->ts_at_ns = live ? bpf_ktime_get_ns() : ts;
			me->timing = 1;
		}
	}
	if (has_ts && (fl & TCP_FLAG_ACK) && peer->timing) {
		if (ecr == peer->ts_val) {
			__u64 now = live ? bpf_ktime_get_ns() : ts;

			peer->timing = 0;
			if (now >= peer->ts_at_ns)
				tcp_add_rtt(side, key, now - peer->ts_at_ns ?: 1);
		} else if ((__s32)(ecr - peer->ts_val) > 0) {
			peer->timing = 0;
		}
	}
	return 0;
}

/* The health of the TCP segment `key`/`li` of `ctx` before it is counted
 * in side `side` (sets li->retrans). */
static __always_inline void tcp_health(void *ctx, struct flow_tuple *key, struct l4_info *li, __u32 side,
                                       bool live, __u64 ts) {
	if (cfg_tcp_health && key->proto == IPPROTO_TCP && li->tcp_hl)
		tcp_health_look(ctx, key, li, side | (live ? 2 : 0), ts);
}

#endif /* PKTSTAT_TCP_HEALTH_BPF_H */
