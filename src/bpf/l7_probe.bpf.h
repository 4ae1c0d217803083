/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * l7_probe.bpf.h - the application label of a flow from its first payload
 * packets (l7.h holds the signatures, parse.bpf.h finds the payload).
 *
 * The look is a global function per context type: the verifier checks it
 * once, on its own, and each caller only makes the call, so the parser's many
 * paths do not multiply the copy and the signature loop (inlined, they made
 * the TC program too big to verify). It parses the frame again itself to
 * find where the payload starts, so the counting path carries nothing for it
 * (no payload offsets kept per packet: an established flow pays the one
 * compare of flow_value.app_tries), then reads up to L7_WINDOW payload bytes
 * with the load-bytes helper through a second global function, so a payload
 * in the skb's paged part (GRO, a TSO super-packet) is read as well as a
 * linear one.
 *
 * A program defines L7_SKB (TC, replay, cgroup_skb) or L7_XDP before it
 * includes count.bpf.h / count_owner.bpf.h, and L7_NAMES where the look
 * also reads the flows' names (l7_names.bpf.h: TC, replay and XDP; the
 * cgroup programs' calls are too deep for its stack frames: a BPF program's
 * call chain has 512 bytes of stack in all), and defines l7_frame_l2(ctx),
 * the `l2_proto` its frames are parsed with (parse_frame); flow_add.bpf.h
 * calls l7_peek only while the flow is still looking (flow_value.app_tries <
 * L7_BUDGET), so a labelled flow, or one whose budget is spent, pays one
 * compare.
 */
#ifndef PKTSTAT_L7_PROBE_BPF_H
#define PKTSTAT_L7_PROBE_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "l7.h"
#include "parse.bpf.h"

/* In l7_look_*'s `l4`: the flow's opening (a SYN) was seen in this table. */
#define L7_PEEK_OPENED 0x80

#if defined(L7_SKB) || defined(L7_XDP)
/* How many payload bytes to look at (0-16): the payload `plen` bytes long by
 * the headers starts `off` bytes into a frame `frame_len` bytes long. */
static __always_inline __u32 l7_want(__u32 frame_len, __u32 off, __u32 plen) {
	__u32 n;

	if (off >= frame_len)
		return 0;
	n = frame_len - off;
	if (n > plen)
		n = plen;
	return n < L7_WINDOW ? n : L7_WINDOW;
}

/* The label of `in` once its `n` bytes (1-16) were read, or L7_APP_UNKNOWN
 * (not recognised, or not one byte captured: `n` 0 or the read failed). */
static __always_inline int l7_label(struct l7_buf *in, __u32 n, long read_err, __u32 plen, __u32 l4) {
	if (!n || read_err)
		return L7_APP_UNKNOWN;
	in->have = n;
	in->plen = plen;
	in->l4 = l4 & (L7_TCP | L7_UDP);
	in->opened = !!(l4 & L7_PEEK_OPENED);
	return l7_classify(in);
}

/* The read length 1-16 in a form Linux 6.1's verifier bounds (it takes no
 * lower bound from a 32-bit compare with 0); `n` 0 reads one byte that
 * l7_label ignores. */
#define L7_READ_LEN(n) ((((n)-1) & (L7_WINDOW - 1)) + 1)

#endif

/* What a look returns beyond the labels (enum l7_app): a TCP or UDP packet
 * without payload, and a frame with nothing to look at (not TCP or UDP, no
 * whole L4 header: the flow stops looking). */
#define L7_LOOK_EMPTY L7_APP_NONE
#define L7_LOOK_NEVER (-1)

#if defined(L7_SKB) || defined(L7_XDP)
static __always_inline __be16 l7_frame_l2(void *ctx); /* the program's (see above) */

/* The payload of `data`..`data_end` (the frame of `ctx`) in `li` (pay_off,
 * pay_len, l7), or L7_LOOK_NEVER / L7_LOOK_EMPTY as l7_peek returns them. */
static __always_inline int l7_find(void *ctx, void *data, void *data_end, struct l4_info *li) {
	struct flow_tuple t;

	__builtin_memset(&t, 0, sizeof(t));
	if (parse_frame(data, data_end, l7_frame_l2(ctx), false, &t, li, true) < 0 || !li->l7)
		return L7_LOOK_NEVER;
	return li->pay_len ? 1 : L7_LOOK_EMPTY;
}
#endif

#if defined(L7_SKB)
__noinline int l7_read_skb(struct __sk_buff *skb, __u32 off, __u32 plen, __u32 l4) {
	struct l7_buf in = {};
	__u32 n;

	if (!skb)
		return L7_APP_UNKNOWN;
	n = l7_want(skb->len, off, plen);
	return l7_label(&in, n, n ? bpf_skb_load_bytes(skb, off, in.b, L7_READ_LEN(n)) : 0, plen, l4);
}
#define L7_CTX struct __sk_buff
#define l7_read l7_read_skb
#elif defined(L7_XDP)
__noinline int l7_read_xdp(struct xdp_md *x, __u32 off, __u32 plen, __u32 l4) {
	struct l7_buf in = {};
	__u32 n;

	if (!x)
		return L7_APP_UNKNOWN;
	/* the linear part: where parse.bpf.h found the headers */
	n = l7_want(x->data_end - x->data, off, plen);
	return l7_label(&in, n, n ? bpf_xdp_load_bytes(x, off, in.b, L7_READ_LEN(n)) : 0, plen, l4);
}
#define L7_CTX struct xdp_md
#define l7_read l7_read_xdp
#endif

#if defined(L7_SKB) || defined(L7_XDP)
#ifdef L7_NAMES
#include "l7_names.bpf.h"
#else
#define L7_LOOK_MORE 0x100
#endif

/* The look at the packet of `ctx`, of the flow `key` labelled `app` so far
 * (flow_value.app): its label (enum l7_app, with L7_LOOK_MORE when the next
 * payload packet is to be looked at too, l7_names.bpf.h), or L7_LOOK_*;
 * `opened`: L7_PEEK_OPENED or 0. A labelled flow still looking (a
 * ClientHello that continues, DNS) goes to its names without a new label. */
#ifdef L7_NAMES
#define L7_LOOK_KEY , const L7_KEY *key
#define l7_peek(ctx, opened, app, key) l7_look((ctx), (opened) ? L7_PEEK_OPENED : 0, (app), (key))
#else
#define L7_LOOK_KEY
#define l7_peek(ctx, opened, app, key) l7_look((ctx), (opened) ? L7_PEEK_OPENED : 0, (app))
#endif
__noinline int l7_look(L7_CTX *ctx, __u32 opened, __u32 app L7_LOOK_KEY) {
	struct l4_info li;
	int found, label;

	if (!ctx)
		return L7_LOOK_NEVER;
	__builtin_memset(&li, 0, sizeof(li));
	found = l7_find(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, &li);
	if (found <= 0)
		return found;
	label = app > L7_APP_UNKNOWN
	            ? (int)app
	            : l7_read(ctx, li.pay_off, li.pay_len, li.l7 | (opened & L7_PEEK_OPENED));
#ifdef L7_NAMES
	switch (label) {
	case L7_APP_UNKNOWN: /* the next segment of a ClientHello? */
		if (li.l7 != L7_TCP)
			return label;
		/* fall through */
	case L7_APP_TLS:
	case L7_APP_DTLS:
	case L7_APP_HTTP:
	case L7_APP_DNS:
	case L7_APP_QUIC:
		return l7_name(ctx, li.pay_off, li.pay_len,
		               label | ((__u32)li.l7 << 8) | ((__u32)li.l4_off << 16), key);
	}
#endif
	return label;
}
#define L7_LOOKS 1
#else /* no packets (process mode's socket events) */
#define l7_peek(ctx, opened, app, key) L7_LOOK_NEVER
#define L7_LOOKS 0 /* add_to_flow drops the look */
#define L7_LOOK_MORE 0x100
#endif

/* One look's outcome `app` into the flow's value: a label ends the looking;
 * a payload without one makes the flow "unknown" until a later look (at most
 * L7_BUDGET in all) finds a label; a packet without payload counts towards
 * L7_EMPTY_BUDGET; a frame with nothing to look at ends the looking. Looking
 * ends with app_tries at L7_BUDGET (L7_DONE once labelled). */
static __always_inline void l7_note(struct flow_value *v, int app) {
	if (app > L7_APP_UNKNOWN) {
		v->app = app & 0xff;
		if (!(app & L7_LOOK_MORE))
			v->app_tries = L7_DONE;
		else if (v->app != L7_APP_DNS) /* a ClientHello's next segment: within the budget */
			v->app_tries++;
		/* DNS: every payload packet (its names, l7_names.bpf.h) */
	} else if (app == L7_APP_UNKNOWN) {
		v->app = L7_APP_UNKNOWN;
		v->app_tries++;
	} else if (app == L7_LOOK_EMPTY) {
		if (++v->app_empty >= L7_EMPTY_BUDGET)
			v->app_tries = L7_BUDGET;
	} else {
		v->app_tries = L7_BUDGET;
	}
}

#endif /* PKTSTAT_L7_PROBE_BPF_H */
