// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * cgroup.bpf.c - cgroup mode: count what the sockets of a cgroup v2 subtree
 * send and receive, per flow and per owning process.
 *
 *  - owner_skb_ingress/egress (cgroup_skb): every packet a socket of the
 *    subtree sends or receives. Frames start at the IP header; skb->len is
 *    the IP packet. Keyed by struct flow_key: tuple + the owner of the
 *    socket (from `owners`) + the socket's cgroup id. Never bpf_get_current_*:
 *    these run in softirq too, where the current task is unrelated.
 *  - owners (socket cookie -> struct sock_owner), filled by
 *      owner_sock_create   (cgroup/sock_create, in the creating process),
 *      owner_sockops       (a passive TCP open takes the owner of the
 *                           listener it came from, if that is one process),
 *      owner_send/recv     (tp_btf sock_send_length/sock_recv_length, in the
 *                           process that calls send/recv: the first process
 *                           that uses an unowned socket alone claims it; a
 *                           second process makes it shared, pid 0),
 *      and by user space at start (sock_diag x /proc/<pid>/fd);
 *    owner_sock_release (cgroup/sock_release) marks entries released and
 *    keeps them for the socket's last packets (FIN, orphaned data), and
 *    queues the cookie in `released`: the engine removes the entry at a
 *    drain at least a grace period later (flow_drain.hpp), so closed
 *    sockets never push live sockets' owners out of the LRU-bounded map;
 *    a release that finds no entry counts an eviction.
 *  - forks (TGID -> fork generation), bumped by owner_fork (tp_btf
 *    sched_process_fork) when a process that owns sockets forks: its child
 *    holds copies of them, so until the owner is next seen using a socket
 *    alone, the socket's packets carry no pid.
 *  - owner_cgroup_mkdir (tp_btf cgroup_mkdir): id and path of cgroup v2
 *    directories made after the start, to a ring buffer, so flows of
 *    short-lived cgroups still resolve to a path.
 */
#define L7_SKB /* l7_probe.bpf.h: the label read through bpf_skb_load_bytes */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "ktypes.bpf.h"
#include "cgroup_events.bpf.h"
#include "count_owner.bpf.h"

#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* resized by the engine */
	__type(key, __u64);         /* socket cookie */
	__type(value, struct sock_owner);
} owners SEC(".maps");

/* Cookies of released sockets, for the engine to remove from `owners`. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 65536); /* resized by the engine, as owners */
	__type(value, __u64);
} released SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listener_key);
	__type(value, __u64); /* listener's cookie; 0 = several listeners with different owners */
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);   /* TGID of a process that owns (or owned) a socket */
	__type(value, __u32); /* how many times it has forked since we know it */
} forks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OWNER_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} owner_stats SEC(".maps");

static __always_inline void owner_stat(__u32 i) {
	__u64 *c = bpf_map_lookup_elem(&owner_stats, &i);

	if (c)
		(*c)++;
}

/* Entries are replaced whole (never written in place), so a reader on
 * another CPU sees the old owner or the new one, never half of each. */
static __always_inline void store_owner(__u64 cookie, const struct sock_owner *o, __u64 flags) {
	long err = bpf_map_update_elem(&owners, &cookie, o, flags);

	if (err && err != -EEXIST && err != -2 /* ENOENT: gone meanwhile */)
		owner_stat(OWNER_STAT_MAP_FULL);
}

static __always_inline bool same_comm(const char *a, const char *b) {
	return ((const __u64 *)a)[0] == ((const __u64 *)b)[0] &&
	       ((const __u64 *)a)[1] == ((const __u64 *)b)[1];
}

/* The calling process: TGID and the comm of its main thread (the process
 * name /proc/<pid>/comm shows, not a worker thread's name). */
static __always_inline void current_owner(struct sock_owner *o) {
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	o->pid = bpf_get_current_pid_tgid() >> 32;
	if (BPF_CORE_READ_STR_INTO(&o->comm, t, group_leader, comm) <= 0)
		bpf_get_current_comm(o->comm, sizeof(o->comm));
}

/* The fork generation of `pid`, starting its count if we had none. */
static __always_inline __u32 owner_gen(__u32 pid) {
	__u32 zero = 0, *g = bpf_map_lookup_elem(&forks, &pid);

	if (g)
		return *g;
	bpf_map_update_elem(&forks, &pid, &zero, BPF_NOEXIST);
	g = bpf_map_lookup_elem(&forks, &pid);
	return g ? *g : 0;
}

/* The owner has not forked since the entry was recorded. */
static __always_inline bool owner_current(const struct sock_owner *o) {
	__u32 *g = bpf_map_lookup_elem(&forks, &o->pid);

	return !g || *g == o->gen;
}

/* Copy an owner out of the map. Entries are replaced whole, but an LRU
 * map's elements are preallocated and may be reused by an insert on another
 * CPU while we copy: read twice, and accept only a copy that did not change
 * under us (else: unknown). */
static __always_inline bool read_owner(const struct sock_owner *o, struct sock_owner *out) {
	const volatile __u64 *w = (const volatile __u64 *)o;
	__u64 *c = (__u64 *)out;

	FLOW_STATIC_ASSERT(sizeof(*o) == 4 * sizeof(__u64), "sock_owner is four words");
	c[0] = w[0];
	c[1] = w[1];
	c[2] = w[2];
	c[3] = w[3];
	return c[0] == w[0] && c[1] == w[1] && c[2] == w[2] && c[3] == w[3];
}

/* ---- packets ---------------------------------------------------------- */

/* parse_frame's l2_proto for the packet of `ctx` (its frame starts at the IP
 * header): skb->protocol, or where that is not IP the version nibble; also
 * the look's (l7_probe.bpf.h). */
static __always_inline __be16 l7_frame_l2(void *ctx) {
	struct __sk_buff *skb = ctx;
	__be16 proto = skb->protocol;
	__u8 *v = (void *)(long)skb->data;

	if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
		return proto;
	if ((void *)(v + 1) <= (void *)(long)skb->data_end && (*v >> 4) == 6)
		return bpf_htons(ETH_P_IPV6);
	return bpf_htons(ETH_P_IP);
}

/* The packet's flow `key` (its tuple, direction and owner filled) counted
 * with what the parser found in `li`, in side `side` (count_owner.bpf.h).
 * A global function, as owner_count: each of the parser's paths ends at the
 * call, and the verifier checks the flow update and the application look
 * once, not once per path. */
__noinline int owner_add(struct __sk_buff *skb, const struct flow_key *key, const struct l4_info *li,
                         __u32 side) {
	struct flow_key
	    k; /* on the stack: Linux 6.1 takes a map key from there, not from an argument's memory */
	struct dir_stats *st;

	if (!skb || !key || !li)
		return 0;
	__builtin_memcpy(&k, key, sizeof(k));
	st = side_stats(side & 1, k.tuple.dir < FLOW_DIR_NR ? k.tuple.dir : 0);
	if (!st)
		return 0;
	add_owned_flow(side & 1, &k, skb->len, tick_ns(), skb, li, st);
	return 0;
}

/* One packet counted in direction `dir` with its owner: `pid` (0: unknown or
 * shared) and the two words of its name (zero: unknown). A global function:
 * the verifier checks the parser once, on its own, whatever the owner
 * lookup's paths before the call. (Inlined into the owner programs, those
 * paths multiplied the parser's and the look's: about 880,000 instructions
 * verified on Linux 6.18, past the million Linux 6.1 allows.) */
__noinline int owner_count(struct __sk_buff *skb, __u32 dir, __u32 pid, __u64 comm_lo, __u64 comm_hi) {
	void *data, *data_end;
	struct flow_key key;
	struct l4_info li;
	struct dir_stats *st;
	__u32 side = current_side();
	__u64 len;
	__be16 proto;

	if (!skb || dir >= FLOW_DIR_NR)
		return 0;
	st = side_stats(side, dir);
	if (!st)
		return 0;
	len = skb->len;
	st->packets++;
	st->bytes += len;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	proto = l7_frame_l2(skb);
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&li, 0, sizeof(li));
	if (parse_frame(data, data_end, proto, false, &key.tuple, &li, false) < 0) {
		st->unparsed_packets++;
		st->unparsed_bytes += len;
		return 0;
	}
	key.tuple.dir = dir;
	key.cgroup_id = bpf_skb_cgroup_id(skb);
	key.pid = pid;
	((__u64 *)key.comm)[0] = comm_lo;
	((__u64 *)key.comm)[1] = comm_hi;
	return owner_add(skb, &key, &li, side);
}

static __always_inline int skb_count(struct __sk_buff *skb, __u32 dir) {
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sock_owner *entry = cookie ? bpf_map_lookup_elem(&owners, &cookie) : NULL;
	struct sock_owner own;

	if (entry && read_owner(entry, &own) && (!own.pid || owner_current(&own))) {
		const __u64 *c = (const __u64 *)own.comm;

		owner_count(skb, dir, own.pid, c[0], c[1]);
	} else { /* no owner, or forked since (maybe its child's packet): nobody's */
		owner_count(skb, dir, 0, 0, 0);
	}
	return 1; /* allow: we only count */
}

SEC("cgroup_skb/ingress")
int owner_skb_ingress(struct __sk_buff *skb) {
	return skb_count(skb, FLOW_DIR_INGRESS);
}

SEC("cgroup_skb/egress")
int owner_skb_egress(struct __sk_buff *skb) {
	return skb_count(skb, FLOW_DIR_EGRESS);
}

/* ---- socket life ------------------------------------------------------- */

SEC("cgroup/sock_create")
int owner_sock_create(struct bpf_sock *sk) {
	struct sock_owner o = {};
	__u64 cookie;

	if (sk->family != AF_INET && sk->family != AF_INET6)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	current_owner(&o);
	o.flags = OWNER_CREATED;
	o.gen = owner_gen(o.pid);
	store_owner(cookie, &o, BPF_ANY);
	owner_stat(OWNER_STAT_CREATED);
	return 1;
}

SEC("cgroup/sock_release")
int owner_sock_release(struct bpf_sock *sk) {
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct sock_owner *o = bpf_map_lookup_elem(&owners, &cookie);
	struct sock_owner n;

	if (!o) {
		/* Every socket of the subtree gets an entry when it is made (or
		 * by the start-time scan): a missing one was pushed out while the
		 * socket was live. */
		if (sk->family == AF_INET || sk->family == AF_INET6)
			owner_stat(OWNER_STAT_EVICTED);
		return 1;
	}
	n = *o;
	n.flags |= OWNER_RELEASED;
	store_owner(cookie, &n, BPF_EXIST);
	owner_stat(OWNER_STAT_RELEASED);
	if (bpf_map_push_elem(&released, &cookie, 0))
		owner_stat(OWNER_STAT_REAP_LOST);
	return 1;
}

static __always_inline bool owner_is_one_live_process(const struct sock_owner *o) {
	return o && o->pid && !(o->flags & (OWNER_SHARED | OWNER_RELEASED | OWNER_UNCLAIMED)) &&
	       owner_current(o);
}

SEC("sockops")
int owner_sockops(struct bpf_sock_ops *skops) {
	struct listener_key lk = {};
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_TCP_LISTEN_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	lk.netns_cookie = bpf_get_netns_cookie(skops);
	lk.port = skops->local_port;
	cookie = bpf_get_socket_cookie(skops);

	if (skops->op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
		/* listen(), in the listening process */
		__u64 *cur = bpf_map_lookup_elem(&listeners, &lk);

		if (cur && *cur != cookie) {
			struct sock_owner *a = *cur ? bpf_map_lookup_elem(&owners, cur) : NULL;
			struct sock_owner *b = bpf_map_lookup_elem(&owners, &cookie);
			bool a_gone = *cur && (!a || (a->flags & OWNER_RELEASED));

			/* Several listeners on one port (addresses, SO_REUSEPORT):
			 * fine while they have one owner, else ambiguous (0). */
			if (!a_gone && !(owner_is_one_live_process(a) && owner_is_one_live_process(b) &&
			                 a->pid == b->pid)) {
				__u64 ambiguous = 0;

				bpf_map_update_elem(&listeners, &lk, &ambiguous, BPF_ANY);
				return 1;
			}
		}
		bpf_map_update_elem(&listeners, &lk, &cookie, BPF_ANY);
		return 1;
	}

	/* A connection the listener completed (softirq: the current task is
	 * unrelated). Whoever accepts it holds the listener: if that is one
	 * process, the connection is its. Otherwise leave it unclaimed for the
	 * process that uses it first. */
	__u64 *lc = bpf_map_lookup_elem(&listeners, &lk);
	struct sock_owner *le = lc && *lc ? bpf_map_lookup_elem(&owners, lc) : NULL;
	struct sock_owner lown, *lo = le && read_owner(le, &lown) ? &lown : NULL;
	struct sock_owner child = {};

	if (owner_is_one_live_process(lo)) {
		child.pid = lo->pid;
		__builtin_memcpy(child.comm, lo->comm, sizeof(child.comm));
		child.flags = OWNER_INHERITED;
		child.gen = lo->gen;
		owner_stat(OWNER_STAT_INHERITED);
	} else {
		if (lo && (lo->flags & OWNER_SHARED))
			__builtin_memcpy(child.comm, lo->comm, sizeof(child.comm));
		child.flags = OWNER_UNCLAIMED;
		owner_stat(OWNER_STAT_UNCLAIMED);
	}
	store_owner(cookie, &child, BPF_NOEXIST);
	return 1;
}

/* ---- processes using sockets ------------------------------------------- */

/* True if the task calling send/recv holds the socket's file through one fd
 * in one fd table and nobody else holds it: one reference, plus the one the
 * syscall itself took if the fd table is shared by threads (fdget takes a
 * reference only then). Anything else (a forked child's copy, dup(), a
 * descriptor in flight) makes it false: not provably sole. */
static __always_inline bool sole_holder(struct sock *sk, struct task_struct *t) {
	struct socket *so = sk->sk_socket;
	struct file *f;
	__s64 refs;
	int users;

	if (!so)
		return false;
	f = so->file;
	if (!f)
		return false;
	if (bpf_core_field_exists(f->f_ref))
		refs = f->f_ref.refcnt.counter + 1;
	else
		refs = ((struct file___old *)f)->f_count.counter;
	users = t->files->count.counter;
	return refs == 1 + (users > 1);
}

static __always_inline void observe_use(struct sock *sk) {
	__u64 cookie = sk->__sk_common.skc_cookie.counter;
	struct task_struct *t;
	struct sock_owner *o, n = {};
	__u32 tgid;

	if (!cookie) /* nobody asked for its cookie: not one of ours */
		return;
	o = bpf_map_lookup_elem(&owners, &cookie);
	if (!o)
		return;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (o->pid == tgid && owner_current(o)) /* the owner itself: the common case */
		return;
	t = bpf_get_current_task_btf();
	if (t->flags & PF_KTHREAD) /* the kernel on a process's behalf */
		return;

	current_owner(&n);
	n.gen = owner_gen(tgid);
	if (sole_holder(sk, t)) {
		n.flags = OWNER_CLAIMED;
		owner_stat(OWNER_STAT_CLAIMED);
	} else if (o->pid == tgid) {
		return; /* the owner, forked, and the child still holds it: stays uncertain */
	} else {
		/* held by this process and at least one more: nobody's alone.
		 * Keep the name only if the users seen so far share it. */
		if (!same_comm(o->comm, n.comm))
			__builtin_memset(n.comm, 0, sizeof(n.comm));
		if ((o->flags & OWNER_SHARED) && same_comm(o->comm, n.comm))
			return; /* nothing changes */
		n.pid = 0;
		n.flags = OWNER_SHARED | (o->flags & OWNER_RELEASED);
		owner_stat(OWNER_STAT_SHARED);
	}
	store_owner(cookie, &n, BPF_EXIST);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(owner_send, struct sock *sk, int ret, int flags) {
	observe_use(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(owner_recv, struct sock *sk, int ret, int flags) {
	observe_use(sk);
	return 0;
}

/* A process forked: if it owns sockets, its child now holds them too. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(owner_fork, struct task_struct *parent, struct task_struct *child) {
	__u32 ptgid = parent->tgid;
	__u32 *g;

	if (child->tgid == ptgid) /* a thread: same process */
		return 0;
	g = bpf_map_lookup_elem(&forks, &ptgid);
	if (g)
		__sync_fetch_and_add(g, 1);
	return 0;
}

/* ---- cgroups made after the start ---------------------------------------- */

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(owner_cgroup_mkdir, struct cgroup *cgrp, const char *path) {
	if (!emit_cgroup_event(cgrp, path))
		owner_stat(OWNER_STAT_EVENTS_LOST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
