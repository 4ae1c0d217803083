// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * process.bpf.c - process mode: what every process of the host sends and
 * receives on its IPv4/IPv6 sockets (TCP, UDP, UDP-Lite, ping and raw ICMP
 * sockets), per flow and per process, counted at the socket layer.
 *
 * Accounting (the same in every backend):
 *  - one event per send or receive call that moved data (ret > 0), per
 *    datagram for datagram sockets (sendmmsg/recvmmsg: one per message);
 *    bytes = the call's return value (payload; for ICMP sockets the ICMP
 *    message). MSG_PEEK and MSG_ERRQUEUE reads are not traffic: not counted;
 *  - one event per retransmitted TCP segment (kind FLOW_KIND_RETRANSMIT,
 *    bytes = its payload), attributed to the process last seen sending on
 *    the socket (process_owners), never to the task a timer interrupted;
 *  - owner of a send or receive: the calling task's process (TGID), the
 *    name of its main thread and its cgroup v2 id. Send and receive calls
 *    run in the caller's context; the receive side's softirq work is not
 *    hooked at all.
 *  - addresses: the socket's, except for datagram sockets, where the peer of
 *    each datagram is taken from the datagram: the destination the caller
 *    passed (msg_name) on send, and the IP/UDP/ICMP headers of the datagram
 *    being consumed on receive (so unconnected sockets show their peers).
 *
 * Backends (the engine loads exactly one, by probing, best first):
 *  - tracepoint: tp_btf/sock_send_length and sock_recv_length (6.3+);
 *    destinations of datagram sends from the sendto/sendmsg/sendmmsg
 *    arguments at tp_btf/sys_enter; datagram sources from tp_btf/consume_skb
 *    (checked against the receiving socket's port/echo id before use) and
 *    cgroup/recvmsg4/6 on the cgroup v2 root (where the caller asks for it).
 *  - fentry: fentry/fexit on inet_sendmsg, inet6_sendmsg, inet_recvmsg,
 *    inet6_recvmsg, sock_common_recvmsg (IPv6 raw and ping sockets)
 *    (msg_name from the kernel's msghdr); datagram sources at
 *    fentry/skb_consume_udp and skb_free_datagram.
 *  - kprobe: the same functions as kprobes and kretprobes.
 * Every backend counts retransmissions at tp_btf/tcp_retransmit_skb and
 * forgets closed sockets at tp_btf/inet_sock_set_state: the kernel may
 * inline the functions around these tracepoints.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <asm/ptrace.h>
#include <asm/unistd.h>
#include <stdbool.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "ktypes.bpf.h"
#include "cgroup_events.bpf.h"
#include "count_owner.bpf.h"
#include "flow.h"
#include "tick_clock.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define MSG_PEEK 0x2
#define MSG_ERRQUEUE 0x2000
#define TCP_CLOSE 7
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define IPPROTO_MPTCP_ 262
#ifndef EEXIST
#define EEXIST 17
#endif

/* ---- maps ------------------------------------------------------------------ */

/* flows and stats (per direction: events seen, and those that did not fit)
 * come with count_owner.bpf.h. */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROC_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} proc_stats SEC(".maps");

/* struct sock * -> the process last seen sending on it (TCP). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct proc_owner);
} process_owners SEC(".maps");

/* A datagram's peer (and, on receive, its local end) as its headers or the
 * caller's msg_name say. */
struct peer {
	__u8 raddr[16]; /* remote address (v4-mapped for IPv4) */
	__u64 sk;       /* the socket it belongs to, 0 = not known */
	__u32 l4len;    /* receive: the L4 length the IP header gives (~0: unknown) */
	__u16 rport;    /* host order; for ICMP: type << 8 | code */
	__u16 lport;
	__u16 icmp_id;  /* receive: the echo identifier */
	__u8 ipver;
	__u8 proto;     /* receive: the L4 protocol; 0 = take the socket's */
	__u8 has_raddr;
	__u8 has_icmp;  /* icmp_type/code are known */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 _pad[4];
};

enum send_kind {
	SEND_ONE = 0,  /* sendto, or a kernel msghdr: `p` holds the destination */
	SEND_MSG = 1,  /* sendmsg: `p` holds it, `vec` is the user msghdr */
	SEND_MMSG = 2, /* sendmmsg: read message `idx` of the user vector `vec` */
};

/* Per thread, between a send's start and its end. */
struct send_ctx {
	__u64 sk;  /* whose send: struct sock * (fentry, kprobe) or struct file * (tracepoint) */
	__u64 vec; /* sendmmsg: user pointer to the struct mmsghdr vector; sendto: the
		    * buffer; sendmsg: the struct user_msghdr (raw sockets: the payload's head) */
	__u32 vlen;
	__u32 idx;
	__u8 kind;
	__u8 _pad[7];
	struct peer p;
};

/* Per thread (task local storage): what a call in progress needs at its end. */
struct thread_state {
	struct send_ctx send; /* a send whose destination or payload head is known: send.sk != 0 */
	struct peer rx;       /* the datagram a receive is consuming: rx.has_raddr */
	__u64 recv_sk;        /* kprobe backend: the socket of the receive in progress */
	__s32 recv_flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} threads SEC(".maps");

/* The cgroup/recvmsg hooks cannot reach task storage on every kernel: they
 * leave the address in a per-CPU slot, tagged with the thread, which the
 * receive's end takes on the same CPU right after (nothing sleeps in
 * between; should the thread be moved, the tag does not match and the
 * datagram counts without its peer). Tracepoint backend only. */
struct rx_slot {
	__u64 tid; /* pid_tgid of the receiving thread, 0 = empty */
	struct peer p;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rx_slot);
} rx_slots SEC(".maps");

/* Settings, written by the engine between open and load. */
const volatile bool cfg_recvmsg_hooks = false; /* rx_slots is filled */

/* ---- helpers ----------------------------------------------------------------- */

static __always_inline void proc_stat_add(__u32 i, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&proc_stats, &i);

	if (c)
		*c += v;
}

static __always_inline void set_v4(__u8 *a, __be32 addr)
{
	__builtin_memset(a, 0, 10);
	a[10] = 0xff;
	a[11] = 0xff;
	__builtin_memcpy(a + 12, &addr, 4);
}

static __always_inline bool v4mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

static __always_inline bool all_zero(const __u8 *a)
{
	const __u64 *w = (const __u64 *)a;

	return w[0] == 0 && w[1] == 0;
}

static __always_inline bool icmp_proto(__u16 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

/* The calling thread's state (created on first use when `create`). */
static __always_inline struct thread_state *thread(bool create)
{
	return bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* ---- what a socket says about itself --------------------------------------------
 * Filled once per event. Programs that get the socket as a BTF-typed
 * argument (tracepoints, fentry/fexit) read it with plain CO-RE loads
 * (sk_info_btf); kprobes, which get bare addresses, through
 * bpf_probe_read_kernel (sk_info_probe). */
struct sk_info {
	__u8 laddr[16]; /* bound/connected local address (v4-mapped for IPv4) */
	__u8 raddr[16]; /* connected peer, or all zero */
	__u64 sk;
	__u16 family, type, proto, lport, rport;
	__u8 ipver;
};

static __always_inline bool sk_info_btf(struct sock *sk, struct sk_info *si)
{
	si->family = sk->__sk_common.skc_family;
	if (si->family != AF_INET && si->family != AF_INET6)
		return false;
	si->sk = (__u64)sk;
	si->type = sk->sk_type;
	si->proto = sk->sk_protocol;
	si->lport = sk->__sk_common.skc_num;
	si->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (si->family == AF_INET) {
		set_v4(si->laddr, sk->__sk_common.skc_rcv_saddr);
		set_v4(si->raddr, sk->__sk_common.skc_daddr);
		si->ipver = 4;
	} else {
		bpf_probe_read_kernel(si->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(si->raddr, 16, &sk->__sk_common.skc_v6_daddr);
		si->ipver = 6;
	}
	if (!si->lport && si->type != SOCK_RAW) /* unbound already (TCP_CLOSE, data left to read) */
		si->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	return true;
}

static __always_inline bool sk_info_probe(struct sock *sk, struct sk_info *si)
{
	si->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (si->family != AF_INET && si->family != AF_INET6)
		return false;
	si->sk = (__u64)sk;
	si->type = BPF_CORE_READ(sk, sk_type);
	si->proto = BPF_CORE_READ(sk, sk_protocol);
	si->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	si->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (si->family == AF_INET) {
		set_v4(si->laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		set_v4(si->raddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		si->ipver = 4;
	} else {
		bpf_core_read(si->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(si->raddr, 16, &sk->__sk_common.skc_v6_daddr);
		si->ipver = 6;
	}
	if (!si->lport && si->type != SOCK_RAW)
		si->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	return true;
}

/* A sockaddr (user or kernel memory) -> peer. Reads 16 bytes first so that a
 * sockaddr_in at the end of a page is never over-read. */
static __always_inline bool read_sockaddr(const void *addr, int len, bool user, struct peer *p)
{
	__u8 sa[28];
	__u16 family;
	long err;

	if (!addr || len < 16)
		return false;
	err = user ? bpf_probe_read_user(sa, 16, addr) : bpf_probe_read_kernel(sa, 16, addr);
	if (err)
		return false;
	family = *(__u16 *)sa;
	p->rport = ((__u16)sa[2] << 8) | sa[3];
	if (family == AF_INET) {
		set_v4(p->raddr, *(__be32 *)(sa + 4));
		p->ipver = 4;
	} else if (family == AF_INET6) {
		if (len < 24)
			return false;
		err = user ? bpf_probe_read_user(sa + 16, 8, addr + 16) : bpf_probe_read_kernel(sa + 16, 8, addr + 16);
		if (err)
			return false;
		__builtin_memcpy(p->raddr, sa + 8, 16);
		p->ipver = v4mapped(p->raddr) ? 4 : 6;
	} else {
		return false;
	}
	p->has_raddr = 1;
	return true;
}

/* The first two payload bytes (an ICMP message's type and code) from user memory. */
static __always_inline void read_head(const void *ubuf, struct peer *p)
{
	__u8 h[2];

	if (ubuf && !bpf_probe_read_user(h, sizeof(h), ubuf)) {
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		p->has_icmp = 1;
	}
}

/* The first payload bytes of a kernel msghdr (its iov_iter has not been
 * consumed yet: call at function entry). */
static __always_inline void read_msg_head(struct msghdr *msg, struct peer *p)
{
	__u8 type = BPF_CORE_READ(msg, msg_iter.iter_type);
	const struct iovec___k *iov;
	void *base = NULL;

	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		base = BPF_CORE_READ(msg, msg_iter.ubuf);
	} else if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC)) {
		if (bpf_core_field_exists(msg->msg_iter.__iov))
			iov = BPF_CORE_READ(msg, msg_iter.__iov);
		else
			iov = BPF_CORE_READ((struct iov_iter___old *)&msg->msg_iter, iov);
		base = BPF_CORE_READ(iov, iov_base);
	}
	read_head(base, p);
}

/* The IP and L4 headers of a datagram being consumed -> peer. Reads both
 * interpretations of the first L4 bytes (ports, ICMP type/code/id): the
 * receiving socket's protocol decides which applies. The skb's own fields
 * come as arguments (the caller reads them as its program type allows). */
static __always_inline bool skb_peer(unsigned char *head, __u16 nh, __u16 th, __be16 l3, struct peer *p)
{
	unsigned char *l4;
	__u8 h[8];

	if (l3 == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.version != 4 || ip.ihl < 5)
			return false;
		if (ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_UDPLITE && ip.protocol != IPPROTO_ICMP)
			return false;
		p->proto = ip.protocol;
		set_v4(p->raddr, ip.saddr);
		p->ipver = 4;
		p->l4len = bpf_ntohs(ip.tot_len) - ip.ihl * 4;
		l4 = head + nh + ip.ihl * 4;
	} else if (l3 == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || ip6.version != 6)
			return false;
		__builtin_memcpy(p->raddr, &ip6.saddr, 16);
		p->ipver = 6;
		p->l4len = bpf_ntohs(ip6.payload_len);
		l4 = head + nh + sizeof(ip6);
		p->proto = ip6.nexthdr;
		if (ip6.nexthdr != IPPROTO_UDP && ip6.nexthdr != IPPROTO_UDPLITE && ip6.nexthdr != IPPROTO_ICMPV6) {
			/* extension headers: the stack has found the L4 header */
			if (th == 0xffff || th <= nh + sizeof(ip6))
				return false;
			p->l4len -= th - (nh + sizeof(ip6));
			l4 = head + th;
			p->proto = 0;
		}
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(h, sizeof(h), l4))
		return false;
	p->rport = ((__u16)h[0] << 8) | h[1];
	p->lport = ((__u16)h[2] << 8) | h[3];
	p->icmp_type = h[0];
	p->icmp_code = h[1];
	p->icmp_id = ((__u16)h[4] << 8) | h[5];
	p->has_raddr = 1;
	p->has_icmp = 1;
	return true;
}

/* Is `p` (a datagram's stashed peer) the datagram this receive returned? */
static __always_inline bool rx_matches(const struct sk_info *si, const struct peer *p, long ret)
{
	if (p->sk && p->sk != si->sk)
		return false;
	if (p->proto && p->proto != si->proto)
		return false;
	if (si->proto == IPPROTO_UDP || si->proto == IPPROTO_UDPLITE)
		return p->lport == si->lport && (p->l4len == ~0U || (__u64)ret + 8 <= p->l4len);
	if (si->type == SOCK_DGRAM && icmp_proto(si->proto)) /* ping socket: its echo id is its "port" */
		return p->icmp_id == si->lport && (__u64)ret <= p->l4len;
	/* a raw IPv4 socket returns the IP header too */
	return si->type == SOCK_RAW && (__u64)ret <= (__u64)p->l4len + 60;
}

/* ---- accounting ---------------------------------------------------------------- */

static __always_inline void add_flow(struct flow_key *key, __u64 bytes, __u32 dir)
{
	struct dir_stats *st = bpf_map_lookup_elem(&stats, &dir);

	if (!st)
		return;
	st->packets++;
	st->bytes += bytes;
	if (!key->pid) {
		proc_stat_add(PROC_STAT_UNOWNED_PACKETS, 1);
		proc_stat_add(PROC_STAT_UNOWNED_BYTES, bytes);
	}
	add_owned_flow(key, bytes, tick_ns(), st);
}

/* The calling process: TGID, the name of its main thread (what
 * /proc/<pid>/comm shows), its cgroup v2 id. */
static __always_inline void current_owner(struct flow_key *k)
{
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
static __always_inline void note_owner(__u64 sk, const struct flow_key *k)
{
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &sk);
	struct proc_owner n = {};

	if (o && o->pid == k->pid && o->cgroup_id == k->cgroup_id)
		return;
	n.pid = k->pid;
	n.cgroup_id = k->cgroup_id;
	__builtin_memcpy(n.comm, k->comm, sizeof(n.comm));
	bpf_map_update_elem(&process_owners, &sk, &n, BPF_ANY);
}

/* One event of the socket `si`. `p`: the datagram's peer (NULL: the
 * socket's). `owner`: who to attribute it to (NULL: the calling process). */
static __always_inline void count_event(const struct sk_info *si, __u64 bytes, __u32 dir, const struct peer *p,
					const struct proc_owner *owner, __u8 kind)
{
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
		if (si->type == SOCK_STREAM && dir == FLOW_DIR_EGRESS)
			note_owner(si->sk, &key);
	}
	add_flow(&key, bytes, dir);
}

/* The end of a send call that moved `ret` bytes. */
static __always_inline void finish_send(const struct sk_info *si, long ret)
{
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
static __always_inline void finish_recv(const struct sk_info *si, long ret, int flags)
{
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
static __always_inline void stash_rx(__u64 sk, unsigned char *head, __u16 nh, __u16 th, __be16 l3)
{
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
static __always_inline void stash_send_msg(struct sock *sk, short type, struct msghdr *msg)
{
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

static __always_inline void count_retransmit(struct sock *sk, __u64 len)
{
	__u64 key = (__u64)sk;
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &key);
	struct proc_owner nobody = {};
	struct sk_info si;

	if (sk_info_btf(sk, &si))
		count_event(&si, len, FLOW_DIR_EGRESS, NULL, o ? o : &nobody, FLOW_KIND_RETRANSMIT);
}

/* ---- tracepoint backend --------------------------------------------------------- */

/* x86-64 and arm64 syscall argument registers, by their kernel names. */
struct pt_regs___x86 {
	unsigned long di, si, dx, r10, r8, r9;
} __attribute__((preserve_access_index));
struct pt_regs___arm64 {
	unsigned long regs[31];
} __attribute__((preserve_access_index));

#if defined(__TARGET_ARCH_x86)
#define SYSCALL_ARG(r, n)                                                                               \
	((n) == 0   ? BPF_CORE_READ((struct pt_regs___x86 *)(r), di)                                     \
	 : (n) == 1 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), si)                                     \
	 : (n) == 2 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), dx)                                     \
	 : (n) == 4 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), r8)                                     \
		    : BPF_CORE_READ((struct pt_regs___x86 *)(r), r9))
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_ARG(r, n) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[n])
#else
#error "process mode's tracepoint backend knows the syscall registers of x86-64 and arm64 only"
#endif

/* struct user_msghdr and struct mmsghdr on 64-bit architectures. */
struct user_msghdr64 {
	__u64 msg_name;
	__s32 msg_namelen;
	__u32 _pad;
	__u64 msg_iov;
	__u64 msg_iovlen;
	__u64 msg_control;
	__u64 msg_controllen;
	__u32 msg_flags;
	__u32 _pad2;
};
#define MMSGHDR64_SIZE 64

/* The file behind descriptor `fd` of the calling task, or NULL. */
static __always_inline __u64 fd_file(int fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = t->files->fdt;
	struct file **fds;
	__u64 f = 0;

	if (fd < 0 || !fdt || (unsigned int)fd >= fdt->max_fds)
		return 0;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return 0;
	return f;
}

static __always_inline void read_user_msghdr(__u64 uptr, bool raw, struct peer *p)
{
	struct user_msghdr64 m;
	__u64 base;

	if (bpf_probe_read_user(&m, sizeof(m), (void *)uptr))
		return;
	read_sockaddr((void *)m.msg_name, m.msg_namelen, true, p);
	if (raw && m.msg_iov && m.msg_iovlen && !bpf_probe_read_user(&base, sizeof(base), (void *)m.msg_iov))
		read_head((void *)base, p);
}

/* sendto(fd, buf, len, flags, addr, addrlen), sendmsg(fd, msg, flags),
 * sendmmsg(fd, vec, vlen, flags) starting: the destination the caller gives,
 * for the sock_send_length calls that follow on the socket of that file
 * (matched by file: the socket's type is not read here, a send() without a
 * destination costs one lookup). */
static __always_inline void sys_send_start(long id, __u64 a0, __u64 a1, __u64 a2, __u64 a4, __u64 a5)
{
	struct thread_state *ts;
	struct send_ctx c = {};
	__u64 f = fd_file((int)a0);

	if (!f)
		return;
	c.sk = f;
	c.vec = a1;
	if (id == __NR_sendmmsg) {
		c.kind = SEND_MMSG;
		c.vlen = (__u32)a2;
	} else {
		c.kind = id == __NR_sendto ? SEND_ONE : SEND_MSG;
		if (id == __NR_sendto)
			read_sockaddr((void *)a4, (int)a5, true, &c.p);
		else
			read_user_msghdr(a1, false, &c.p);
		if (!c.p.has_raddr) { /* the socket says where (or the send fails) */
			ts = thread(false);
			if (ts)
				ts->send.sk = 0;
			return;
		}
	}
	ts = thread(true);
	if (ts)
		ts->send = c;
}

/* Where tracefs shows the syscall tracepoints, only the three send calls
 * run a program; otherwise every system call's entry does (one compare). */
struct syscall_enter_args {
	__u64 common; /* struct trace_entry */
	long nr;
	unsigned long args[6];
};

SEC("tracepoint/syscalls/sys_enter_sendto")
int proc_tp_sendto(struct syscall_enter_args *ctx)
{
	sys_send_start(__NR_sendto, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[4], ctx->args[5]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int proc_tp_sendmsg(struct syscall_enter_args *ctx)
{
	sys_send_start(__NR_sendmsg, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int proc_tp_sendmmsg(struct syscall_enter_args *ctx)
{
	sys_send_start(__NR_sendmmsg, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(proc_tp_sys_enter, struct pt_regs *regs, long id)
{
	if (id != __NR_sendto && id != __NR_sendmsg && id != __NR_sendmmsg)
		return 0;
	sys_send_start(id, SYSCALL_ARG(regs, 0), SYSCALL_ARG(regs, 1), SYSCALL_ARG(regs, 2), SYSCALL_ARG(regs, 4),
		       SYSCALL_ARG(regs, 5));
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(proc_tp_send, struct sock *sk, int ret, int flags)
{
	struct thread_state *ts;
	struct socket *so;
	struct sk_info si;
	struct peer p = {};
	bool have = false;

	if (!sk_info_btf(sk, &si))
		return 0;
	if (si.type != SOCK_STREAM && (ts = thread(false)) && ts->send.sk && (so = sk->sk_socket) &&
	    ts->send.sk == (__u64)so->file) {
		if (ts->send.kind == SEND_MMSG) {
			if (ts->send.idx < ts->send.vlen) {
				read_user_msghdr(ts->send.vec + (__u64)ts->send.idx * MMSGHDR64_SIZE, si.type == SOCK_RAW,
						 &p);
				have = true;
			}
			if (++ts->send.idx >= ts->send.vlen)
				ts->send.sk = 0;
		} else {
			p = ts->send.p;
			have = true;
			ts->send.sk = 0;
			if (si.type == SOCK_RAW) { /* the message's type and code: its first bytes */
				if (ts->send.kind == SEND_ONE)
					read_head((void *)ts->send.vec, &p);
				else
					read_user_msghdr(ts->send.vec, true, &p);
			}
		}
	}
	if (ret > 0)
		count_event(&si, ret, FLOW_DIR_EGRESS, have ? &p : NULL, NULL, FLOW_KIND_DATA);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(proc_tp_recv, struct sock *sk, int ret, int flags)
{
	struct sk_info si;

	if (sk_info_btf(sk, &si))
		finish_recv(&si, ret, flags);
	return 0;
}

/* A datagram being freed after its receive (skb_consume_udp,
 * skb_free_datagram): the peer, for the sock_recv_length that follows. This
 * fires for every skb the kernel frees normally: cheap checks first. */
SEC("tp_btf/consume_skb")
int BPF_PROG(proc_tp_consume, struct sk_buff *skb)
{
	__be16 l3 = skb->protocol;
	struct task_struct *t;

	if (l3 != bpf_htons(ETH_P_IP) && l3 != bpf_htons(ETH_P_IPV6))
		return 0;
	t = bpf_get_current_task_btf();
	if ((t->flags & PF_KTHREAD) || !t->tgid) /* no receive call runs on a kernel thread */
		return 0;
	stash_rx(0, skb->head, skb->network_header, skb->transport_header, l3);
	return 0;
}

/* recvmsg()/recvfrom() asking for the source address of a UDP datagram:
 * the kernel has just written it (the datagram itself is freed without a
 * tracepoint on Linux 6.18+). Never changes what the caller gets. */
static __always_inline void stash_recvmsg_addr(struct bpf_sock_addr *ctx, bool v6)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bpf_sock *sk = ctx->sk;
	struct peer p = {};

	if (!sk)
		return;
	if (v6) {
		__u32 *a = (__u32 *)p.raddr;

		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		p.ipver = v4mapped(p.raddr) ? 4 : 6;
	} else {
		set_v4(p.raddr, ctx->user_ip4);
		p.ipver = 4;
	}
	p.rport = bpf_ntohs((__u16)ctx->user_port);
	p.lport = sk->src_port;
	p.proto = sk->protocol;
	p.l4len = ~0U;
	p.has_raddr = 1;
	__u32 zero = 0;
	struct rx_slot *slot = bpf_map_lookup_elem(&rx_slots, &zero);

	if (slot) {
		slot->tid = id;
		slot->p = p;
	}
}

SEC("cgroup/recvmsg4")
int proc_tp_recvmsg4(struct bpf_sock_addr *ctx)
{
	stash_recvmsg_addr(ctx, false);
	return 1;
}

SEC("cgroup/recvmsg6")
int proc_tp_recvmsg6(struct bpf_sock_addr *ctx)
{
	stash_recvmsg_addr(ctx, true);
	return 1;
}

/* ---- fentry backend --------------------------------------------------------------- */

#define FENTRY_SEND(name, fn)                                                                           \
	SEC("fentry/" #fn)                                                                               \
	int BPF_PROG(proc_fe_##name, struct socket *sock, struct msghdr *msg, __u64 size)               \
	{                                                                                                \
		stash_send_msg(sock->sk, sock->type, msg);                                               \
		return 0;                                                                                \
	}                                                                                                \
	SEC("fexit/" #fn)                                                                                \
	int BPF_PROG(proc_fx_##name, struct socket *sock, struct msghdr *msg, __u64 size, int ret)      \
	{                                                                                                \
		struct sk_info si;                                                                       \
		if (sk_info_btf(sock->sk, &si))                                                          \
			finish_send(&si, ret);                                                           \
		return 0;                                                                                \
	}

FENTRY_SEND(send4, inet_sendmsg)
FENTRY_SEND(send6, inet6_sendmsg)

/* IPv6 raw and ping sockets (inet6_sockraw_ops) receive through sock_common_recvmsg. */
#define FEXIT_RECV(name, fn)                                                                            \
	SEC("fexit/" #fn)                                                                                \
	int BPF_PROG(proc_fx_##name, struct socket *sock, struct msghdr *msg, __u64 size, int flags,    \
		     int ret)                                                                            \
	{                                                                                                \
		struct sk_info si;                                                                       \
		if (sk_info_btf(sock->sk, &si))                                                          \
			finish_recv(&si, ret, flags);                                                    \
		return 0;                                                                                \
	}

FEXIT_RECV(recv4, inet_recvmsg)
FEXIT_RECV(recv6, inet6_recvmsg)
FEXIT_RECV(recv_common, sock_common_recvmsg)

static __always_inline void fe_consume(struct sock *sk, struct sk_buff *skb)
{
	__u16 family = sk->__sk_common.skc_family;

	if ((family != AF_INET && family != AF_INET6) || sk->sk_type == SOCK_STREAM)
		return;
	stash_rx((__u64)sk, skb->head, skb->network_header, skb->transport_header, skb->protocol);
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(proc_fe_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	fe_consume(sk, skb);
	return 0;
}

SEC("fentry/skb_free_datagram")
int BPF_PROG(proc_fe_free_datagram, struct sock *sk, struct sk_buff *skb)
{
	fe_consume(sk, skb);
	return 0;
}

/* ---- kprobe backend ----------------------------------------------------------------- */

static __always_inline void kp_send_start(struct socket *sock, struct msghdr *msg)
{
	struct thread_state *ts = thread(true);
	short type = BPF_CORE_READ(sock, type);
	struct send_ctx c = {};

	if (!ts)
		return;
	/* the return probe knows nothing else: always say which socket */
	c.sk = (__u64)BPF_CORE_READ(sock, sk);
	c.kind = SEND_ONE;
	if (type != SOCK_STREAM) {
		read_sockaddr(BPF_CORE_READ(msg, msg_name), BPF_CORE_READ(msg, msg_namelen), false, &c.p);
		if (type == SOCK_RAW)
			read_msg_head(msg, &c.p);
	}
	ts->send = c;
}

static __always_inline void kp_send_end(long ret)
{
	struct thread_state *ts = thread(false);
	struct sk_info si;
	struct peer p;

	if (!ts || !ts->send.sk)
		return;
	p = ts->send.p;
	if (!sk_info_probe((struct sock *)ts->send.sk, &si)) {
		ts->send.sk = 0;
		return;
	}
	ts->send.sk = 0;
	if (ret > 0)
		count_event(&si, ret, FLOW_DIR_EGRESS, p.has_raddr || p.has_icmp ? &p : NULL, NULL, FLOW_KIND_DATA);
}

#define KPROBE_SEND(name, fn)                                                                           \
	SEC("kprobe/" #fn)                                                                               \
	int BPF_KPROBE(proc_kp_##name, struct socket *sock, struct msghdr *msg)                          \
	{                                                                                                \
		kp_send_start(sock, msg);                                                                \
		return 0;                                                                                \
	}                                                                                                \
	SEC("kretprobe/" #fn)                                                                            \
	int BPF_KRETPROBE(proc_krp_##name, int ret)                                                      \
	{                                                                                                \
		kp_send_end(ret);                                                                        \
		return 0;                                                                                \
	}

KPROBE_SEND(send4, inet_sendmsg)
KPROBE_SEND(send6, inet6_sendmsg)

static __always_inline void kp_recv_start(struct socket *sock, int flags)
{
	struct thread_state *ts = thread(true);

	if (ts) {
		ts->recv_sk = (__u64)BPF_CORE_READ(sock, sk);
		ts->recv_flags = flags;
	}
}

static __always_inline void kp_recv_end(long ret)
{
	struct thread_state *ts = thread(false);
	struct sk_info si;
	__u64 sk;

	if (!ts || !ts->recv_sk)
		return;
	sk = ts->recv_sk;
	ts->recv_sk = 0;
	if (sk_info_probe((struct sock *)sk, &si))
		finish_recv(&si, ret, ts->recv_flags);
}

#define KPROBE_RECV(name, fn)                                                                           \
	SEC("kprobe/" #fn)                                                                               \
	int BPF_KPROBE(proc_kp_##name, struct socket *sock, struct msghdr *msg, __u64 size, int flags)   \
	{                                                                                                \
		kp_recv_start(sock, flags);                                                              \
		return 0;                                                                                \
	}                                                                                                \
	SEC("kretprobe/" #fn)                                                                            \
	int BPF_KRETPROBE(proc_krp_##name, int ret)                                                      \
	{                                                                                                \
		kp_recv_end(ret);                                                                        \
		return 0;                                                                                \
	}

KPROBE_RECV(recv4, inet_recvmsg)
KPROBE_RECV(recv6, inet6_recvmsg)
KPROBE_RECV(recv_common, sock_common_recvmsg)

static __always_inline void kp_consume(struct sock *sk, struct sk_buff *skb)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_type) == SOCK_STREAM)
		return;
	stash_rx((__u64)sk, BPF_CORE_READ(skb, head), BPF_CORE_READ(skb, network_header),
		 BPF_CORE_READ(skb, transport_header), BPF_CORE_READ(skb, protocol));
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(proc_kp_consume_udp, struct sock *sk, struct sk_buff *skb)
{
	kp_consume(sk, skb);
	return 0;
}

SEC("kprobe/skb_free_datagram")
int BPF_KPROBE(proc_kp_free_datagram, struct sock *sk, struct sk_buff *skb)
{
	kp_consume(sk, skb);
	return 0;
}

/* ---- every backend -------------------------------------------------------------------- */

/* Retransmissions and socket ends from the tracepoints in every backend:
 * the kernel may inline the functions around them (6.1 does). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans, struct sock *sk, struct sk_buff *skb)
{
	count_retransmit(sk, skb->len);
	return 0;
}

/* 6.13+: the tracepoint also fires for failed retransmissions, with err. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans_err, struct sock *sk, struct sk_buff *skb, int err)
{
	if (!err)
		count_retransmit(sk, skb->len);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(proc_tp_state, struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;

	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&process_owners, &key);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(proc_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	emit_cgroup_event(cgrp, path);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
