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

/* The label of the payload `plen` bytes long (by the headers) that starts
 * `off` bytes into a frame `frame_len` bytes long, carried by `l4`; the
 * bytes come from `load` (a load-bytes helper). L7_APP_UNKNOWN: not
 * recognised, or not one byte of it captured. */
#define L7_LOOK(load, ctx, frame_len, off, plen, l4)                                                         \
	({                                                                                                   \
		struct l7_buf in_ = {};                                                                      \
		__u32 n_ = (frame_len);                                                                      \
		int app_ = L7_APP_UNKNOWN;                                                                   \
                                                                                                             \
		if ((off) < n_) {                                                                            \
			n_ -= (off);                                                                         \
			if (n_ > (plen))                                                                     \
				n_ = (plen);                                                                 \
			if (n_ > L7_WINDOW)                                                                  \
				n_ = L7_WINDOW;                                                              \
			if (n_ >= 1 && n_ <= L7_WINDOW && !load((ctx), (off), in_.b, n_)) {                  \
				in_.have = n_;                                                               \
				in_.plen = (plen);                                                           \
				in_.l4 = (l4);                                                               \
				app_ = l7_classify(&in_);                                                    \
			}                                                                                    \
		}                                                                                            \
		app_;                                                                                        \
	})

#if defined(L7_SKB)
__noinline int l7_look_skb(struct __sk_buff *skb, __u32 off, __u32 plen, __u32 l4) {
	if (!skb)
		return L7_APP_UNKNOWN;
	return L7_LOOK(bpf_skb_load_bytes, skb, skb->len, off, plen, l4);
}
#define l7_peek(ctx, li) l7_look_skb((ctx), (li)->pay_off, (li)->pay_len, (li)->l7)
#elif defined(L7_XDP)
__noinline int l7_look_xdp(struct xdp_md *x, __u32 off, __u32 plen, __u32 l4) {
	if (!x)
		return L7_APP_UNKNOWN;
	/* the linear part: where parse.bpf.h found the headers */
	return L7_LOOK(bpf_xdp_load_bytes, x, x->data_end - x->data, off, plen, l4);
}
#define l7_peek(ctx, li) l7_look_xdp((ctx), (li)->pay_off, (li)->pay_len, (li)->l7)
#else /* no packets (process mode's socket events): never looked at */
#define l7_peek(ctx, li) L7_APP_NONE
#endif

/* One look's outcome `app` into the flow's value: a label ends the looking;
 * L7_BUDGET looks without one make the flow "unknown". */
static __always_inline void l7_note(struct flow_value *v, int app) {
	if (app > L7_APP_UNKNOWN) {
		v->app = app;
		v->app_tries = L7_DONE;
	} else if (++v->app_tries >= L7_BUDGET) {
		v->app = L7_APP_UNKNOWN;
	}
}

#endif /* PKTSTAT_L7_PROBE_BPF_H */
