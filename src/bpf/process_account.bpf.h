/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * process_account.bpf.h - process mode's accounting, the same in every backend: the owner
 * of an event, one send or receive call (or retransmission) into its flow, and
 * what a call in progress stashes for its end.
 *
 * Part of process.bpf.c (one object, one skeleton): included there, after
 * its maps and the headers before it, and by nothing else.
 */
#ifndef PKTSTAT_PROCESS_ACCOUNT_BPF_H
#define PKTSTAT_PROCESS_ACCOUNT_BPF_H

/* ---- accounting ---------------------------------------------------------------- */

static __always_inline void add_flow(struct flow_key *key, __u64 bytes, __u32 dir) {
	__u32 side = current_side();
	struct dir_stats *st = side_stats(side, dir);

	if (!st)
		return;
	st->packets++;
	st->bytes += bytes;
	if (!key->pid) {
		proc_stat_add(PROC_STAT_UNOWNED_PACKETS, 1);
		proc_stat_add(PROC_STAT_UNOWNED_BYTES, bytes);
	}
	add_owned_flow(side, key, bytes, tick_ns(), NULL, NULL, st); /* socket events: no packet */
}

/* The calling process: TGID, the name of its main thread (what
 * /proc/<pid>/comm shows), its cgroup v2 id. */
static __always_inline void current_owner(struct flow_key *k) {
	struct task_struct *t = bpf_get_current_task_btf();
	const __u64 *comm = (const __u64 *)t->group_leader->comm;

	/* plain loads from the task (what bpf_get_current_pid_tgid, _comm and
	 * _cgroup_id read, without a helper call each) */
	k->pid = t->tgid;
	((__u64 *)k->comm)[0] = comm[0];
	((__u64 *)k->comm)[1] = comm[1];
	k->cgroup_id = t->cgroups->dfl_cgrp->kn->id;
}

/* Remember who sends on a TCP socket, for its retransmissions. */
static __always_inline void note_owner(__u64 sk, const struct flow_key *k) {
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &sk);
	struct proc_owner n = {};

	if (o && o->pid == k->pid && o->cgroup_id == k->cgroup_id)
		return;
	n.pid = k->pid;
	n.cgroup_id = k->cgroup_id;
	__builtin_memcpy(n.comm, k->comm, sizeof(n.comm));
	if (!owners_since)
		owners_since = bpf_jiffies64();
	bpf_map_update_elem(&process_owners, &sk, &n, BPF_ANY);
}

/* One event of the socket `si`. `p`: the datagram's peer (NULL: the
 * socket's). `owner`: who to attribute it to (NULL: the calling process). */
static __always_inline void count_event(const struct sk_info *si, __u64 bytes, __u32 dir,
                                        const struct peer *p, const struct proc_owner *owner, __u8 kind) {
	struct flow_key key;
	struct flow_tuple *t = &key.tuple;
	__u16 lport = si->lport, rport = si->rport;
	__u8 *loc, *rem;

	__builtin_memset(&key, 0, sizeof(key));
	loc = dir == FLOW_DIR_EGRESS ? t->saddr : t->daddr;
	rem = dir == FLOW_DIR_EGRESS ? t->daddr : t->saddr;
	__builtin_memcpy(loc, si->laddr, 16);
	__builtin_memcpy(rem, si->raddr, 16);
	t->ipver = si->ipver;

	if (si->type != SOCK_STREAM) {
		if (p && p->has_raddr) {
			__builtin_memcpy(rem, p->raddr, 16);
			rport = p->rport;
			t->ipver = p->ipver;
		} else if (all_zero(rem) || (t->ipver == 4 && v4mapped(rem) && !((__u32 *)rem)[3])) {
			proc_stat_add(PROC_STAT_NO_PEER_PACKETS, 1);
			proc_stat_add(PROC_STAT_NO_PEER_BYTES, bytes);
		}
	}
	if (t->ipver == 6 && v4mapped(rem)) /* an IPv6 socket talking IPv4 */
		t->ipver = 4;
	if (t->ipver == 4) { /* v4-mapped form on both ends (a dual-stack socket bound to ::) */
		__builtin_memset(loc, 0, 10);
		loc[10] = loc[11] = 0xff;
		__builtin_memset(rem, 0, 10);
		rem[10] = rem[11] = 0xff;
	}

	if (icmp_proto(si->proto)) {
		__u8 itype = 0, icode = 0;

		if (p && p->has_icmp) {
			itype = p->icmp_type;
			icode = p->icmp_code;
		} else if (si->type == SOCK_DGRAM) { /* a ping socket sends echo requests only */
			itype = dir == FLOW_DIR_EGRESS ? (si->proto == IPPROTO_ICMP ? 8 : 128)
			                               : (si->proto == IPPROTO_ICMP ? 0 : 129);
		}
		/* the wire's protocol: an IPv6 socket talking IPv4 would not be ICMP */
		t->proto = t->ipver == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
		t->sport = itype;
		t->dport = icode;
	} else if (si->type == SOCK_RAW) {
		t->proto = si->proto;
	} else {
		t->proto = si->proto == IPPROTO_MPTCP_ ? IPPROTO_TCP : si->proto;
		t->sport = dir == FLOW_DIR_EGRESS ? lport : rport;
		t->dport = dir == FLOW_DIR_EGRESS ? rport : lport;
	}
	t->dir = dir;
	t->kind = kind;

	if (owner) {
		key.pid = owner->pid;
		key.cgroup_id = owner->cgroup_id;
		__builtin_memcpy(key.comm, owner->comm, sizeof(key.comm));
	} else {
		current_owner(&key);
		if (si->type == SOCK_STREAM && si->proto == IPPROTO_TCP && dir == FLOW_DIR_EGRESS)
			note_owner(si->sk, &key);
	}
	add_flow(&key, bytes, dir);
}

/* The end of a send call that moved `ret` bytes. */
static __always_inline void finish_send(const struct sk_info *si, long ret) {
	struct thread_state *ts = si->type != SOCK_STREAM ? thread(false) : NULL;
	struct peer p;
	bool have = false;

	if (ts && ts->send.sk == si->sk && ts->send.kind == SEND_ONE) {
		p = ts->send.p;
		have = true;
		ts->send.sk = 0;
	}
	if (ret > 0)
		count_event(si, ret, FLOW_DIR_EGRESS, have ? &p : NULL, NULL, FLOW_KIND_DATA);
}

/* The end of a receive call on the socket `si`. Candidates for the
 * datagram's peer, each checked against the socket: the address the kernel
 * gave the caller (cgroup/recvmsg hooks), then the datagram last consumed
 * by this thread. Both are used up. */
static __always_inline void finish_recv(const struct sk_info *si, long ret, int flags) {
	__u64 id;
	struct thread_state *ts;
	struct peer p;
	bool have = false, counted = ret > 0 && !(flags & (MSG_PEEK | MSG_ERRQUEUE));

	if (si->type == SOCK_STREAM) {
		if (counted)
			count_event(si, ret, FLOW_DIR_INGRESS, NULL, NULL, FLOW_KIND_DATA);
		return;
	}
	if (cfg_recvmsg_hooks) {
		__u32 zero = 0;
		struct rx_slot *slot = bpf_map_lookup_elem(&rx_slots, &zero);

		id = bpf_get_current_pid_tgid();
		if (slot && slot->tid == id) {
			p = slot->p;
			have = counted && rx_matches(si, &p, ret);
			slot->tid = 0;
		}
	}
	ts = thread(false);
	if (ts && ts->rx.has_raddr) {
		if (!have) {
			p = ts->rx;
			have = counted && rx_matches(si, &p, ret);
		}
		ts->rx.has_raddr = 0;
	}
	if (counted)
		count_event(si, ret, FLOW_DIR_INGRESS, have ? &p : NULL, NULL, FLOW_KIND_DATA);
}

/* A datagram is being consumed by a receive of the calling thread: its peer,
 * for the receive's end. `sk`: its socket where known (0: checked at the end). */
static __always_inline void stash_rx(__u64 sk, unsigned char *head, __u16 nh, __u16 th, __be16 l3) {
	struct thread_state *ts;
	struct peer p = {};

	if (!skb_peer(head, nh, th, l3, &p))
		return;
	ts = thread(true);
	if (!ts)
		return;
	p.sk = sk;
	ts->rx = p;
}

/* Start of a send through a kernel msghdr (fentry/kprobe backends): what the
 * end needs, for a datagram socket. */
static __always_inline void stash_send_msg(struct sock *sk, short type, struct msghdr *msg) {
	struct thread_state *ts;
	struct send_ctx c = {};

	if (!sk || type == SOCK_STREAM)
		return;
	c.sk = (__u64)sk;
	c.kind = SEND_ONE;
	read_sockaddr(BPF_CORE_READ(msg, msg_name), BPF_CORE_READ(msg, msg_namelen), false, &c.p);
	if (type == SOCK_RAW)
		read_msg_head(msg, &c.p);
	if (!c.p.has_raddr && !c.p.has_icmp)
		return; /* the socket says all: nothing to carry */
	ts = thread(true);
	if (ts)
		ts->send = c;
}

static __always_inline void count_retransmit(struct sock *sk, __u64 len) {
	__u64 key = (__u64)sk;
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &key);
	struct proc_owner nobody = {};
	struct sk_info si;

	if (sk_info_btf(sk, &si))
		count_event(&si, len, FLOW_DIR_EGRESS, NULL, o ? o : &nobody, FLOW_KIND_RETRANSMIT);
}

#endif /* PKTSTAT_PROCESS_ACCOUNT_BPF_H */
