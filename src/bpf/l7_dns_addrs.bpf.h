/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * l7_dns_addrs.bpf.h - a DNS response's A and AAAA answers, for the engine
 * to name the flows that later go to those addresses (flow_drain.cpp,
 * dns_cache.hpp; docs/counting.md "Names from DNS answers"). Part of
 * l7_names.bpf.h, which includes it after its scratch maps.
 *
 * Up to L7_DNS_ANSWERS answer records, read from the message's first
 * L7_SCRATCH bytes in this frame, go to the `dns_addrs` map: address (as
 * flow.h keeps addresses) -> the QUESTION's name (a CNAME chain's
 * addresses are the name asked for), the record's TTL and when it was seen
 * (the flows' clock). Owner names of the records are skipped, never
 * followed: a compression pointer ends a name (a loop of pointers cannot
 * loop here), a record cut by the frame's end or with an rdlength past it
 * ends the walk, and only an A record of 4 bytes or an AAAA record of 16
 * (class IN) is taken. The same question again for an address keeps its
 * first time and takes the later expiry; another question replaces it.
 * Moved out at each drain like `names`; an address the map has no room for
 * is counted in `name_stats.dns_addrs_full`.
 */
#ifndef PKTSTAT_L7_DNS_ADDRS_BPF_H
#define PKTSTAT_L7_DNS_ADDRS_BPF_H

/* Answer records of a DNS response walked for A and AAAA addresses. */
#define L7_DNS_ANSWERS 16

/* The time a frame is stamped with, as its flow's first/last seen (the
 * program's: the capture's time in replay, tick_ns() live). */
static __always_inline __u64 l7_frame_ns(void *ctx);

/* A DNS response's A/AAAA answers: address -> the question's name, TTL,
 * time seen; moved out by the engine at each drain (its size: as `names`). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by the engine (--max-entries) */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dns_addr_key);
	__type(value, struct dns_addr);
} dns_addrs SEC(".maps");

/* Per-CPU scratch: the dns_addrs value of the response being walked. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_addr);
} dns_addr_new SEC(".maps");

/* Two dns_addrs values name the same question (their names are zero past
 * their length: l7_dns_addrs). */
static __always_inline bool l7_same_name(const struct dns_addr *x, const struct dns_addr *y) {
	const __u64 *p = (const __u64 *)x->name, *q = (const __u64 *)y->name;

	if (x->len != y->len)
		return false;
#pragma unroll
	for (int j = 0; j < (FLOW_NAME_MAX + 1) / 8; j++)
		if (p[j] != q[j])
			return false;
	return true;
}

/* bpf_loop's turn: one step of the walk of the answer records, a label of
 * an owner name (skipped: a compression pointer or the root label ends it,
 * and is never followed) or the fixed part of a record (an A or AAAA
 * record's address into dns_addrs, with dns_addr_new's name and time).
 * One step per turn keeps the callback free of loops (verified once, in
 * few instructions); each turn moves on by at least 2 bytes. Returns 1 to
 * stop: the records or the message end, or a record is malformed. */
static long l7_dns_rr(__u32 i, void *unused) {
	__u32 zero = 0, pos, type, class, ttl, rd, rdlen, l;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);
	struct dns_addr *a = bpf_map_lookup_elem(&dns_addr_new, &zero);
	struct name_stats *st = bpf_map_lookup_elem(&name_stats, &zero);
	struct dns_addr *old;
	struct dns_addr_key k;
	__u64 end, old_end;

#define B(x) ((__u32)s->b[(x) & (L7_SCRATCH - 1)])
	if (!s || !a || !st)
		return 1;
	pos = s->rr_pos;
	if (pos >= s->rr_n || !s->rr_left)
		return 1;
	if (s->rr_in_name) {
		l = B(pos);
		if (!l || (l & 0xc0) == 0xc0) { /* the root label, or a compression pointer */
			s->rr_pos = pos + (l ? 2 : 1);
			s->rr_in_name = 0;
		} else if (l & 0xc0) { /* a reserved label type */
			return 1;
		} else {
			s->rr_pos = pos + l + 1;
		}
		return 0;
	}
	if (pos + 10 > s->rr_n)
		return 1;
	type = B(pos) << 8 | B(pos + 1);
	class = B(pos + 2) << 8 | B(pos + 3);
	ttl = B(pos + 4) << 24 | B(pos + 5) << 16 | B(pos + 6) << 8 | B(pos + 7);
	rdlen = B(pos + 8) << 8 | B(pos + 9);
	rd = pos + 10;
	if (rd + rdlen > s->rr_n) /* an rdlength past what we have */
		return 1;
	s->rr_pos = rd + rdlen;
	s->rr_in_name = 1;
	s->rr_left--;
	if (class != 1 || !((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)))
		return 0;
	__builtin_memset(&k, 0, sizeof(k));
	if (type == 1) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		for (int j = 0; j < 4; j++)
			k.addr[12 + j] = B(rd + j);
		k.ipver = 4;
	} else {
		for (int j = 0; j < 16; j++)
			k.addr[j] = B(rd + j);
		k.ipver = 6;
	}
#undef B
	if (ttl & 0x80000000) /* RFC 2181 8: as 0 */
		ttl = 0;
	a->ttl = ttl;
	old = bpf_map_lookup_elem(&dns_addrs, &k);
	if (old && old->seen_ns <= a->seen_ns && l7_same_name(old, a)) {
		/* the same question again: the address keeps its first time
		 * (flows since then are its), and the later expiry */
		end = a->seen_ns + (__u64)ttl * 1000000000;
		old_end = old->seen_ns + (__u64)old->ttl * 1000000000;
		if (end > old_end)
			old->ttl = (end - old->seen_ns) / 1000000000;
		st->dns_addrs++;
		return 0;
	}
	if (bpf_map_update_elem(&dns_addrs, &k, a, BPF_ANY) == 0)
		st->dns_addrs++;
	else
		st->dns_addrs_full++;
	return 0;
}

/* The answers of the DNS response l7_dns has just read into `e` (it left
 * where in name_bytes: rr_off, rr_n, rr_pos, rr_left; none: rr_left 0),
 * named after its question. Called by l7_name, not by l7_dns, so its
 * frames and the callback's stay within the call chain's 512 bytes. */
__noinline int l7_dns_addrs(L7_CTX *c, struct flow_name *e) {
	__u32 zero = 0, n;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);
	struct dns_addr *a = bpf_map_lookup_elem(&dns_addr_new, &zero);

	if (!c || !e || !s || !a || !s->rr_left)
		return 0;
	n = s->rr_n;
	if (n < 12 || n > L7_SCRATCH || l7_load(c, s->rr_off, s->b, L7_LEN(n, L7_SCRATCH)))
		return 0;
	a->seen_ns = l7_frame_ns(c);
	a->len = e->len;
	__builtin_memset(a->name, 0, sizeof(a->name)); /* (zero past len: l7_same_name) */
	if (!a->len || l7_load(c, s->rr_off + 12, a->name, L7_LEN(a->len, 256)))
		return 0;
	s->rr_in_name = 1;
	bpf_loop(L7_SCRATCH, l7_dns_rr, NULL, 0);
	return 0;
}

#endif /* PKTSTAT_L7_DNS_ADDRS_BPF_H */
