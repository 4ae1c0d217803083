/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * l7_probe.bpf.h - the application label of a flow from its first payload
 * packets (l7.h holds the signatures, parse.bpf.h finds the payload).
 *
 * The look is a global function per context type: the verifier checks it
 * once, on its own, and each caller only makes the call, so the parser's many
 * paths do not multiply the copy and the signature loop (inlined, they made
 * the TC program too big to verify). It reads up to L7_WINDOW payload bytes
 * with the load-bytes helper, so a payload in the skb's paged part (GRO, a
 * TSO super-packet) is read as well as a linear one.
 *
 * A program defines L7_SKB (TC, replay, cgroup_skb) or L7_XDP before it
 * includes count.bpf.h / count_owner.bpf.h; flow_add.bpf.h calls l7_peek
 * only while the flow is still looking (flow_value.app_tries < L7_BUDGET),
 * so a labelled flow, or one whose budget is spent, pays one compare.
 */
#ifndef PKTSTAT_L7_PROBE_BPF_H
#define PKTSTAT_L7_PROBE_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "l7.h"

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

#if defined(L7_SKB)
__noinline int l7_look_skb(struct __sk_buff *skb, __u32 off, __u32 plen, __u32 l4) {
	struct l7_buf in = {};
	__u32 n;

	if (!skb)
		return L7_APP_UNKNOWN;
	n = l7_want(skb->len, off, plen);
	return l7_label(&in, n, n ? bpf_skb_load_bytes(skb, off, in.b, L7_READ_LEN(n)) : 0, plen, l4);
}
#define L7_LOOKS 1
#define l7_peek(ctx, li, opened)                                                                             \
	l7_look_skb((ctx), (li)->pay_off, (li)->pay_len, (li)->l7 | ((opened) ? L7_PEEK_OPENED : 0))
#elif defined(L7_XDP)
__noinline int l7_look_xdp(struct xdp_md *x, __u32 off, __u32 plen, __u32 l4) {
	struct l7_buf in = {};
	__u32 n;

	if (!x)
		return L7_APP_UNKNOWN;
	/* the linear part: where parse.bpf.h found the headers */
	n = l7_want(x->data_end - x->data, off, plen);
	return l7_label(&in, n, n ? bpf_xdp_load_bytes(x, off, in.b, L7_READ_LEN(n)) : 0, plen, l4);
}
#define L7_LOOKS 1
#define l7_peek(ctx, li, opened)                                                                             \
	l7_look_xdp((ctx), (li)->pay_off, (li)->pay_len, (li)->l7 | ((opened) ? L7_PEEK_OPENED : 0))
#else /* no packets (process mode's socket events), or no look (cgroup mode) */
#define l7_peek(ctx, li, opened) L7_APP_NONE
#define L7_LOOKS 0 /* add_to_flow drops the look (and the parser's payload offsets go unused) */
#endif

/* One look's outcome `app` into the flow's value: a label ends the looking;
 * a look without one makes the flow "unknown" until a later look (at most
 * L7_BUDGET in all) finds a label. */
static __always_inline void l7_note(struct flow_value *v, int app) {
	if (app > L7_APP_UNKNOWN) {
		v->app = app;
		v->app_tries = L7_DONE;
	} else {
		v->app = L7_APP_UNKNOWN;
		v->app_tries++;
	}
}

#endif /* PKTSTAT_L7_PROBE_BPF_H */
