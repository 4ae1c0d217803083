/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * l7_names.bpf.h - what a flow's first payload packets name (flow.h, struct
 * flow_name): the server name (SNI) and the ALPN protocols of a TLS or DTLS
 * ClientHello, the Host header of an HTTP/1.x request, the query name and
 * type of a DNS message (with a response's code and answer count), the
 * version of a QUIC long header.
 *
 * l7_name is a global function the look (l7_probe.bpf.h) calls after it has
 * labelled a payload, so the verifier checks it once, on its own, and the
 * counting path never reaches it: a flow is looked at only while it is still
 * looking (flow_value.app_tries), and only TLS, DTLS, HTTP, DNS and QUIC
 * payloads (and, for a ClientHello that continues, the next segment) come
 * here. Names go to the `names` map keyed as the program's flows are
 * (L7_KEY), written once for TLS, DTLS, HTTP and QUIC; a DNS flow is looked
 * at on every payload packet and keeps its last name, with counts of its
 * queries and responses. The engine moves the entries out at each drain
 * (flow_drain.cpp), so the map needs room only for one interval's names; a
 * name the map has no room for is counted in `name_stats.full`.
 *
 * A DNS response's A and AAAA answers go to the `dns_addrs` map (address ->
 * the question's name, TTL, time seen), read by l7_dns_addrs.bpf.h.
 *
 * A ClientHello longer than its first TCP segment (post-quantum key shares
 * make them 1,200-1,800 bytes) is continued in the next segment of the
 * flow, in order (its sequence number is checked), when the extension the
 * first segment stopped in ends in the second; an extension cut in its own
 * first 4 bytes, or a server name cut by the segment boundary, is not read.
 * DTLS and QUIC are datagrams: no continuation. QUIC's server name is in its
 * encrypted Initial packet: only the version is shown (docs/counting.md).
 */
#ifndef PKTSTAT_L7_NAMES_BPF_H
#define PKTSTAT_L7_NAMES_BPF_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "l7.h"

#if defined(L7_SKB) || defined(L7_XDP)

#ifndef L7_KEY
#error "define L7_KEY (the flow map's key type) before including l7_names.bpf.h"
#endif

/* l7_name's result beyond the label: look at the flow's next payload packet
 * too (a ClientHello that continues, a DNS flow). */
#define L7_LOOK_MORE 0x100
/* Extensions of a ClientHello walked per segment (Chrome sends about 18). */
#define L7_TLS_EXTS 32
/* HTTP request bytes searched for the Host header. */
#define L7_HTTP_WINDOW 1024
/* Labels of a DNS name walked (a 255-byte name has at most 127). */
#define L7_DNS_LABELS 128
#define L7_SCRATCH 2048     /* power of two, > L7_HTTP_WINDOW + FLOW_NAME_MAX */
#define L7_DTLS 0x80000000u /* l7_tls's `avail`: a DTLS ClientHello */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by the engine (--max-entries) */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, L7_KEY);
	__type(value, struct flow_name);
} names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct name_stats);
} name_stats SEC(".maps");

/* Per-CPU scratch: a new flow's entry as it is filled, and payload bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_name);
} name_new SEC(".maps");

struct l7_bytes {
	__u32 sni_at, alpn_at; /* l7_tls_exts: where the two extensions' bodies start */
	/* l7_dns_rr's walk of a response's answers (in b: rr_n bytes of the
	 * message from its header on): where it is, the records still to read,
	 * 1 while at a label of an owner name. Kept here, in map memory the
	 * verifier does not track, so its turns' states meet again. */
	__u32 rr_pos, rr_n, rr_left, rr_in_name;
	__u32 rr_off; /* where the message starts in the frame */
	__u8 b[L7_SCRATCH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_bytes);
} name_bytes SEC(".maps");

#if defined(L7_SKB)
#define l7_load bpf_skb_load_bytes
#define l7_frame_len(c) ((c)->len)
#else
#define l7_load bpf_xdp_load_bytes
#define l7_frame_len(c) ((__u32)((c)->data_end - (c)->data))
#endif

/* A read length 1..max (max a power of two) the verifier bounds from below
 * as well (Linux 6.1 takes no lower bound from a compare with 0). */
#define L7_LEN(n, max) ((((n)-1) & ((max)-1)) + 1)

static __always_inline int l7_be16(L7_CTX *c, __u32 off, __u32 *v) {
	__u8 b[2];

	if (l7_load(c, off, b, 2))
		return -1;
	*v = ((__u32)b[0] << 8) | b[1];
	return 0;
}

static __always_inline int l7_be32(L7_CTX *c, __u32 off, __u32 *v) {
	__u8 b[4];

	if (l7_load(c, off, b, 4))
		return -1;
	*v = ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
	return 0;
}

/* The extensions of a ClientHello from `pos` to `end` (offsets in the
 * payload at `off`, of which `avail` bytes are in this frame; `at` holds
 * both, off << 16 | avail): the server name and the ALPN list into `out`.
 * Returns where the walk stopped: at or past `end` when done, at or past
 * `avail` when the rest is in the next segment. The loop only notes where
 * the two extensions are, in map memory (which the verifier does not track,
 * so the turns' paths meet again); they are read after it. */
__noinline int l7_tls_exts(L7_CTX *c, __u32 at, __u32 pos, __u32 end, struct flow_name *out) {
	__u32 off = at >> 16, avail = at & 0xffff, sni, alpn, w, n, zero = 0;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);
	__u8 b[5];

	if (!c || !out || !s)
		return end;
	s->sni_at = 0;
	s->alpn_at = 0;
	for (int i = 0; i < L7_TLS_EXTS; i++) {
		if (pos >= end || pos + 4 > avail || l7_be32(c, off + pos, &w))
			break;
		if (w >> 16 == 0)
			s->sni_at = pos + 4;
		else if (w >> 16 == 16)
			s->alpn_at = pos + 4;
		pos += 4 + (w & 0xffff);
	}
	sni = *(volatile __u32 *)&s->sni_at; /* read back: not the compiler's copy */
	alpn = *(volatile __u32 *)&s->alpn_at;
	/* server_name: list length, name type 0 (host_name), length, name */
	if (sni && !out->len && sni + 5 <= avail && !l7_load(c, off + sni, b, 5) && b[2] == 0) {
		n = ((__u32)b[3] << 8) | b[4];
		if (n > FLOW_NAME_MAX)
			n = FLOW_NAME_MAX;
		if (n && sni + 5 + n <= avail && !l7_load(c, off + sni + 5, out->name, L7_LEN(n, 256)))
			out->len = n;
	}
	/* application_layer_protocol_negotiation: list length, list */
	if (alpn && !out->alpn_len && alpn + 2 < avail && !l7_be16(c, off + alpn, &n)) {
		if (n > FLOW_ALPN_MAX)
			n = FLOW_ALPN_MAX;
		if (alpn + 2 + n > avail)
			n = avail - alpn - 2;
		if (n && !l7_load(c, off + alpn + 2, out->alpn, L7_LEN(n, FLOW_ALPN_MAX)))
			out->alpn_len = n;
	}
	return pos;
}

/* A TLS (or DTLS) ClientHello starting the payload: its extensions walked
 * into `out`; for TLS whose extensions continue past this segment, where
 * the walk resumes (tls_*; `seq`: this segment's sequence number). Returns
 * L7_LOOK_MORE when it continues. */
__noinline int l7_tls(L7_CTX *c, __u32 off, __u32 avail, __u32 seq, struct flow_name *out) {
	bool dtls = avail & L7_DTLS;
	__u32 pos = dtls ? 59 : 43, v, end;
	__u8 h[14];

	if (!c || !out)
		return 0;
	avail &= ~L7_DTLS;
	if (avail < pos + 1 || l7_load(c, off, h, 14) || h[0] != 0x16 || h[dtls ? 13 : 5] != 1)
		return 0; /* not a handshake record holding a ClientHello */
	if (l7_load(c, off + pos, h, 1))
		return 0;
	pos += 1 + h[0]; /* session id */
	if (dtls) {      /* cookie */
		if (l7_load(c, off + pos, h, 1))
			return 0;
		pos += 1 + h[0];
	}
	if (l7_be16(c, off + pos, &v)) /* cipher suites */
		return 0;
	pos += 2 + v;
	if (l7_load(c, off + pos, h, 1)) /* compression methods */
		return 0;
	pos += 1 + h[0];
	if (l7_be16(c, off + pos, &v)) /* extensions */
		return 0;
	pos += 2;
	end = pos + v;
	pos = l7_tls_exts(c, off << 16 | avail, pos, end, out);
	if (dtls || out->len || pos >= end || pos < avail)
		return 0;
	out->tls_more = 1;
	out->tls_skip = pos - avail;
	out->tls_left = end - pos;
	out->tls_seq = seq + avail;
	return L7_LOOK_MORE;
}

/* The next segment of a ClientHello `e` left unfinished (its sequence number
 * `seq` must be the one expected). */
__noinline int l7_tls_more(L7_CTX *c, __u32 off, __u32 avail, __u32 seq, struct flow_name *e) {
	__u32 pos, end;

	if (!c || !e)
		return 0;
	e->tls_more = 0;
	if (seq != e->tls_seq)
		return 0;
	pos = l7_tls_exts(c, off << 16 | avail, e->tls_skip, e->tls_skip + e->tls_left, e);
	end = e->tls_skip + e->tls_left;
	if (e->len)
		e->kind = FLOW_NAME_SNI;
	if (e->len || pos >= end || pos < avail)
		return 0;
	e->tls_more = 1;
	e->tls_left = end - pos;
	e->tls_skip = pos - avail;
	e->tls_seq = seq + avail;
	return L7_LOOK_MORE;
}

/* bpf_loop's turn `i` of the search for the Host header in the bytes
 * l7_http read (name_bytes: `alpn_at` of them): where its value starts into
 * `sni_at`. (A callback is verified once, not once per turn.) */
static long l7_http_at(__u32 i, void *unused) {
	__u32 zero = 0;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);

	if (!s || i >= L7_HTTP_WINDOW - 6 || i + 6 > s->alpn_at)
		return 1;
	if (s->b[i] == '\n' && (s->b[i + 1] | 0x20) == 'h' && (s->b[i + 2] | 0x20) == 'o' &&
	    (s->b[i + 3] | 0x20) == 's' && (s->b[i + 4] | 0x20) == 't' && s->b[i + 5] == ':') {
		s->sni_at = i + 6;
		return 1;
	}
	return 0;
}

/* An HTTP/1.x request's Host header value (the first L7_HTTP_WINDOW bytes
 * are searched) into `out`. */
__noinline int l7_http(L7_CTX *c, __u32 off, __u32 avail, struct flow_name *out) {
	__u32 n = avail < L7_HTTP_WINDOW ? avail : L7_HTTP_WINDOW, start = 0, len = 0, zero = 0;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);

	if (!c || !out || !s || n < 16 || l7_load(c, off, s->b, L7_LEN(n, L7_HTTP_WINDOW)))
		return 0;
	if (s->b[0] == 'H' && s->b[1] == 'T' && s->b[2] == 'T' && s->b[3] == 'P')
		return 0; /* a response */
	s->sni_at = 0;    /* where the value starts */
	s->alpn_at = n;
	bpf_loop(L7_HTTP_WINDOW - 6, l7_http_at, NULL, 0);
	start = *(volatile __u32 *)&s->sni_at; /* read back: not the compiler's copy */
	if (!start || start >= L7_HTTP_WINDOW)
		return 0;
	for (int j = 0; j < 16 && start < n; j++) {
		__u8 ch = s->b[start & (L7_SCRATCH - 1)];

		if (ch != ' ' && ch != '\t')
			break;
		start++;
	}
	s->sni_at = start;
	start = *(volatile __u32 *)&s->sni_at;
	if (start >= L7_HTTP_WINDOW)
		return 0;
	s->alpn_at = 0; /* the value's length */
	for (__u32 j = 0; j < FLOW_NAME_MAX; j++) {
		__u32 at = start + j;
		__u8 ch;

		if (at >= n)
			break;
		ch = s->b[at & (L7_SCRATCH - 1)];
		if (ch == '\r' || ch == '\n')
			break;
		s->alpn_at = j + 1;
	}
	len = *(volatile __u32 *)&s->alpn_at;
	if (len > FLOW_NAME_MAX)
		return 0;
	/* (trailing blanks are stripped in user space) */
	if (len && !l7_load(c, off + start, out->name, L7_LEN(len, 256))) {
		out->kind = FLOW_NAME_HTTP_HOST;
		out->len = len;
	}
	return 0;
}

#include "l7_dns_addrs.bpf.h" /* (needs name_bytes, name_stats, l7_load above) */

/* A DNS message (after the length prefix over TCP): counted in `e` (the
 * flow's entry, or `s->out` for a new one), its question's name (wire
 * form) and type made the flow's name. Returns 1 when `e` changed. */
__noinline int l7_dns(L7_CTX *c, __u32 off, __u32 avail, __u32 tcp, struct flow_name *e) {
	__u32 flags, qd, an, n, pos = 0, qtype, zero = 0;
	struct l7_bytes *s = bpf_map_lookup_elem(&name_bytes, &zero);
	__u8 h[12];

	if (!c || !e || !s)
		return 0;
	s->rr_left = 0; /* (l7_dns_addrs: no answers to read) */
	if (tcp) {
		if (avail < 2)
			return 0;
		off += 2;
		avail -= 2;
	}
	if (avail < 12 + 5 || l7_load(c, off, h, 12))
		return 0;
	flags = ((__u32)h[2] << 8) | h[3];
	qd = ((__u32)h[4] << 8) | h[5];
	an = ((__u32)h[6] << 8) | h[7];
	if (flags & 0x7800) /* an opcode other than QUERY */
		return 0;
	if (flags & 0x8000) {
		e->dns_responses++;
		e->dns_rcode = flags & 0xf;
		e->dns_answers = an;
	} else {
		e->dns_queries++;
	}
	n = avail - 12;
	if (n > FLOW_NAME_MAX + 4)
		n = FLOW_NAME_MAX + 4;
	if (!qd || l7_load(c, off + 12, s->b, L7_LEN(n, 512)))
		return 1;
	for (int i = 0; i < L7_DNS_LABELS; i++) {
		__u8 l = s->b[pos & (L7_SCRATCH - 1)];

		if (!l)
			break;
		if (l & 0xc0) /* a pointer or reserved label type: not in a question */
			return 1;
		pos += l + 1;
		if (pos >= n || pos >= FLOW_NAME_MAX)
			return 1;
	}
	if (s->b[pos & (L7_SCRATCH - 1)] || pos + 3 > n) /* no root label, or no type */
		return 1;
	qtype = ((__u32)s->b[(pos + 1) & (L7_SCRATCH - 1)] << 8) | s->b[(pos + 2) & (L7_SCRATCH - 1)];
	pos += 1; /* the name with its root label */
	if (l7_load(c, off + 12, e->name, L7_LEN(pos, 256)))
		return 1;
	e->kind = FLOW_NAME_DNS;
	e->len = pos;
	e->dns_qtype = qtype;
	/* a response to one question, without error: its addresses */
	if ((flags & 0x800f) == 0x8000 && qd == 1 && an) {
		s->rr_off = off;
		s->rr_n = avail < L7_SCRATCH ? avail : L7_SCRATCH;
		s->rr_pos = 12 + pos + 4;
		s->rr_left = an < L7_DNS_ANSWERS ? an : L7_DNS_ANSWERS;
	}
	return 1;
}

/* The names of the payload `plen` bytes long at `off` in the frame of `c`,
 * labelled `what & 0xff` (enum l7_app; L7_APP_UNKNOWN: only a ClientHello's
 * continuation is looked for), with L7_TCP/L7_UDP in bits 8-9 and the L4
 * header's offset in bits 16-31; `key` is the flow's. Returns the label
 * (a continued ClientHello's flow is TLS), with L7_LOOK_MORE when the flow's
 * next payload packet is to be looked at too. */
__noinline int l7_name(L7_CTX *c, __u32 off, __u32 plen, __u32 what, const L7_KEY *key) {
	__u32 app = what & 0xff, tcp = ((what >> 8) & 3) == L7_TCP, l4_off = what >> 16, avail, seq = 0,
	      zero = 0;
	struct flow_name *e, *out;
	struct name_stats *st;
	int more = 0;
	__u8 v[5];
	L7_KEY k; /* on the stack: Linux 6.1 takes a map key from there only */

	if (!c || !key)
		return app;
	__builtin_memcpy(&k, key, sizeof(k));
	out = bpf_map_lookup_elem(&name_new, &zero);
	st = bpf_map_lookup_elem(&name_stats, &zero);
	if (!out || !st)
		return app;
	avail = l7_frame_len(c);
	avail = off < avail ? avail - off : 0;
	if (avail > plen)
		avail = plen;
	if (avail > 0xffff)
		avail = 0xffff;
	if (tcp && l7_be32(c, l4_off + 4, &seq))
		return app;
	e = bpf_map_lookup_elem(&names, &k);
	if (e) {
		if (e->tls_more && tcp)
			return l7_tls_more(c, off, avail, seq, e) | L7_APP_TLS;
		if (app != L7_APP_DNS)
			return app;
		l7_dns(c, off, avail, tcp, e);
		l7_dns_addrs(c, e);
		return app | L7_LOOK_MORE;
	}
	__builtin_memset(out, 0, sizeof(*out));
	out->dns_rcode = FLOW_NAME_NO_RCODE;
	switch (app) {
	case L7_APP_TLS:
	case L7_APP_DTLS:
		more = l7_tls(c, off, avail | (app == L7_APP_DTLS ? L7_DTLS : 0), seq, out);
		if (app == L7_APP_DTLS || !tcp)
			more = 0;
		if (out->len)
			out->kind = FLOW_NAME_SNI;
		if (!out->len && !out->alpn_len && !more)
			return app;
		break;
	case L7_APP_HTTP:
		l7_http(c, off, avail, out);
		if (!out->len)
			return app;
		break;
	case L7_APP_DNS:
		more = L7_LOOK_MORE;
		if (!l7_dns(c, off, avail, tcp, out))
			return app | more;
		l7_dns_addrs(c, out);
		break;
	case L7_APP_QUIC:
		if (avail < 5 || l7_load(c, off, v, 5) || !(v[0] & 0x80))
			return app;
		out->quic_version = ((__u32)v[1] << 24) | ((__u32)v[2] << 16) | ((__u32)v[3] << 8) | v[4];
		out->quic = 1;
		break;
	default:
		return app;
	}
	if (bpf_map_update_elem(&names, &k, out, BPF_NOEXIST) == 0)
		st->written++;
	else if (!bpf_map_lookup_elem(&names, &k)) /* not another CPU's insert: no room */
		st->full++;
	return app | more;
}

#endif /* L7_SKB || L7_XDP */
#endif /* PKTSTAT_L7_NAMES_BPF_H */
