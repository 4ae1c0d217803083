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
#include "flow.h"

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536); /* resized by the engine (--max-entries) */
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

/* Per direction: events seen, and those that did not fit (overflow). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_DIR_NR);
	__type(key, __u32);
	__type(value, struct dir_stats);
} stats SEC(".maps");

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
	SEND_ONE = 0,  /* sendto/sendmsg or a kernel msghdr: `p` holds it */
	SEND_MMSG = 1, /* sendmmsg: read message `idx` of the user vector `vec` */
};

/* Per thread, between a send's start and its end. */
struct send_ctx {
	__u64 sk;
	__u64 vec; /* sendmmsg: user pointer to the struct mmsghdr vector */
	__u32 vlen;
	__u32 idx;
	__u8 kind;
	__u8 _pad[7];
	struct peer p;
};

/* Per thread, between a receive's start and its end (kprobe backend). */
struct recv_ctx {
	__u64 sk;
	__s32 flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct send_ctx);
} send_ctxs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct recv_ctx);
} recv_ctxs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct peer);
} rx_peers SEC(".maps");

/* Scratch for building a send context (too big for the stack with a key). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct send_ctx);
} send_scratch SEC(".maps");

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

/* The calling process: TGID, the name of its main thread (what
 * /proc/<pid>/comm shows), its cgroup v2 id. */
static __always_inline void current_owner(struct flow_key *k)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	k->pid = bpf_get_current_pid_tgid() >> 32;
	if (BPF_CORE_READ_STR_INTO(&k->comm, t, group_leader, comm) <= 0)
		bpf_get_current_comm(k->comm, sizeof(k->comm));
	k->cgroup_id = bpf_get_current_cgroup_id();
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
 * receiving socket's protocol decides which applies. */
static __always_inline bool skb_peer(struct sk_buff *skb, struct peer *p)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__be16 l3 = BPF_CORE_READ(skb, protocol);
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
			__u16 th = BPF_CORE_READ(skb, transport_header);

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

static __always_inline bool icmp_proto(__u16 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

/* Is `p` (from a consumed datagram) the datagram this receive returned? */
static __always_inline bool rx_matches(struct sock *sk, const struct peer *p, long ret)
{
	__u16 type = BPF_CORE_READ(sk, sk_type);
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);
	__u16 num = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (p->sk && p->sk != (__u64)sk)
		return false;
	if (p->proto && p->proto != proto)
		return false;
	if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE)
		return p->lport == num && (p->l4len == ~0U || (__u64)ret + 8 <= p->l4len);
	if (type == SOCK_DGRAM && icmp_proto(proto)) /* ping socket: its echo id is its "port" */
		return p->icmp_id == num && (__u64)ret <= p->l4len;
	/* a raw IPv4 socket returns the IP header too */
	return type == SOCK_RAW && (__u64)ret <= (__u64)p->l4len + 60;
}

/* ---- accounting ---------------------------------------------------------------- */

static __always_inline void add_flow(struct flow_key *key, __u64 bytes, __u32 dir)
{
	__u64 now = bpf_ktime_get_ns();
	struct flow_value *v;
	struct dir_stats *st = bpf_map_lookup_elem(&stats, &dir);

	if (!st)
		return;
	st->packets++;
	st->bytes += bytes;
	if (!key->pid) {
		proc_stat_add(PROC_STAT_UNOWNED_PACKETS, 1);
		proc_stat_add(PROC_STAT_UNOWNED_BYTES, bytes);
	}

	v = bpf_map_lookup_elem(&flows, key);
	if (v) {
hit:
		if (!v->packets)
			v->first_seen_ns = now;
		v->packets++;
		v->bytes += bytes;
		v->last_seen_ns = now;
		return;
	}
	struct flow_value init = {
		.packets = 1,
		.bytes = bytes,
		.first_seen_ns = now,
		.last_seen_ns = now,
	};
	long err = bpf_map_update_elem(&flows, key, &init, BPF_NOEXIST);

	if (!err)
		return;
	if (err == -EEXIST) {
		v = bpf_map_lookup_elem(&flows, key);
		if (v)
			goto hit;
	}
	st->overflow_packets++;
	st->overflow_bytes += bytes;
}

/* Remember who sends on a TCP socket, for its retransmissions. */
static __always_inline void note_owner(struct sock *sk, const struct flow_key *k)
{
	__u64 key = (__u64)sk;
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &key);
	struct proc_owner n = {};

	if (o && o->pid == k->pid && o->cgroup_id == k->cgroup_id)
		return;
	n.pid = k->pid;
	n.cgroup_id = k->cgroup_id;
	__builtin_memcpy(n.comm, k->comm, sizeof(n.comm));
	bpf_map_update_elem(&process_owners, &key, &n, BPF_ANY);
}

/* One event of `sk`. `p`: the datagram's peer (NULL: the socket's). `owner`:
 * who to attribute it to (NULL: the calling process). */
static __always_inline void count_event(struct sock *sk, __u64 bytes, __u32 dir, const struct peer *p,
					const struct proc_owner *owner, __u8 kind)
{
	struct flow_key key;
	struct flow_tuple *t = &key.tuple;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 type, proto, lport, rport;
	__u8 *loc, *rem;

	if (family != AF_INET && family != AF_INET6)
		return;
	__builtin_memset(&key, 0, sizeof(key));
	type = BPF_CORE_READ(sk, sk_type);
	proto = BPF_CORE_READ(sk, sk_protocol);
	loc = dir == FLOW_DIR_EGRESS ? t->saddr : t->daddr;
	rem = dir == FLOW_DIR_EGRESS ? t->daddr : t->saddr;

	if (family == AF_INET) {
		set_v4(loc, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		set_v4(rem, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		t->ipver = 4;
	} else {
		bpf_core_read(loc, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(rem, 16, &sk->__sk_common.skc_v6_daddr);
		t->ipver = 6;
	}
	lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!lport && type != SOCK_RAW)
		lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

	if (type != SOCK_STREAM) {
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

	if (icmp_proto(proto)) {
		__u8 itype = 0, icode = 0;

		if (p && p->has_icmp) {
			itype = p->icmp_type;
			icode = p->icmp_code;
		} else if (type == SOCK_DGRAM) { /* a ping socket sends echo requests only */
			itype = dir == FLOW_DIR_EGRESS ? (proto == IPPROTO_ICMP ? 8 : 128)
						       : (proto == IPPROTO_ICMP ? 0 : 129);
		}
		/* the wire's protocol: an IPv6 socket talking IPv4 would not be ICMP */
		t->proto = t->ipver == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
		t->sport = itype;
		t->dport = icode;
	} else if (type == SOCK_RAW) {
		t->proto = proto;
	} else {
		t->proto = proto == IPPROTO_MPTCP_ ? IPPROTO_TCP : proto;
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
		if (type == SOCK_STREAM && dir == FLOW_DIR_EGRESS)
			note_owner(sk, &key);
	}
	add_flow(&key, bytes, dir);
}

static __always_inline void count_retransmit(struct sock *sk, struct sk_buff *skb)
{
	__u64 key = (__u64)sk;
	struct proc_owner *o = bpf_map_lookup_elem(&process_owners, &key);
	struct proc_owner nobody = {};

	count_event(sk, BPF_CORE_READ(skb, len), FLOW_DIR_EGRESS, NULL, o ? o : &nobody, FLOW_KIND_RETRANSMIT);
}

static __always_inline void forget_socket(struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&process_owners, &key);
}

/* A datagram `sk` is consuming: remember its peer for the receive's end. */
static __always_inline void stash_rx(struct sock *sk, struct sk_buff *skb, bool sk_known)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct peer p = {};

	if (sk_known) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

		if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_type) == SOCK_STREAM)
			return;
		p.sk = (__u64)sk;
	}
	if (!skb_peer(skb, &p))
		return;
	bpf_map_update_elem(&rx_peers, &id, &p, BPF_ANY);
}

/* The end of a receive call on `sk`. */
static __always_inline void finish_recv(struct sock *sk, long ret, int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct peer *p = NULL;
	struct peer copy;

	if (!sk)
		return;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM) {
		p = bpf_map_lookup_elem(&rx_peers, &id);
		if (p) {
			copy = *p;
			bpf_map_delete_elem(&rx_peers, &id);
			p = &copy;
		}
	}
	if (ret <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)))
		return;
	if (p && !rx_matches(sk, p, ret))
		p = NULL;
	count_event(sk, ret, FLOW_DIR_INGRESS, p, NULL, FLOW_KIND_DATA);
}

/* Start of a send through a kernel msghdr (fentry/kprobe backends). */
static __always_inline void stash_send_msg(struct socket *sock, struct msghdr *msg, bool always)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct send_ctx *c;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	short type = BPF_CORE_READ(sock, type);

	if (!sk || (type == SOCK_STREAM && !always))
		return;
	c = bpf_map_lookup_elem(&send_scratch, &zero);
	if (!c)
		return;
	__builtin_memset(c, 0, sizeof(*c));
	c->sk = (__u64)sk;
	c->kind = SEND_ONE;
	if (type != SOCK_STREAM) {
		read_sockaddr(BPF_CORE_READ(msg, msg_name), BPF_CORE_READ(msg, msg_namelen), false, &c->p);
		if (type == SOCK_RAW)
			read_msg_head(msg, &c->p);
	}
	bpf_map_update_elem(&send_ctxs, &id, c, BPF_ANY);
}

/* The end of a send call on `sk` (NULL: take it from the stashed context). */
static __always_inline void finish_send(struct sock *sk, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct send_ctx *c = bpf_map_lookup_elem(&send_ctxs, &id);
	struct peer p = {};
	bool have = false;

	if (c && (!sk || c->sk == (__u64)sk)) {
		sk = (struct sock *)c->sk;
		p = c->p;
		have = true;
		bpf_map_delete_elem(&send_ctxs, &id);
	}
	if (!sk || ret <= 0)
		return;
	count_event(sk, ret, FLOW_DIR_EGRESS, have ? &p : NULL, NULL, FLOW_KIND_DATA);
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
#define SYSCALL_ARG0(r) BPF_CORE_READ((struct pt_regs___x86 *)(r), di)
#define SYSCALL_ARG1(r) BPF_CORE_READ((struct pt_regs___x86 *)(r), si)
#define SYSCALL_ARG2(r) BPF_CORE_READ((struct pt_regs___x86 *)(r), dx)
#define SYSCALL_ARG4(r) BPF_CORE_READ((struct pt_regs___x86 *)(r), r8)
#define SYSCALL_ARG5(r) BPF_CORE_READ((struct pt_regs___x86 *)(r), r9)
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_ARG0(r) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[0])
#define SYSCALL_ARG1(r) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[1])
#define SYSCALL_ARG2(r) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[2])
#define SYSCALL_ARG4(r) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[4])
#define SYSCALL_ARG5(r) BPF_CORE_READ((struct pt_regs___arm64 *)(r), regs[5])
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

/* The socket behind file descriptor `fd` of the calling task, or NULL. */
static __always_inline struct sock *fd_sock(int fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds, *f = NULL;
	struct socket *sock;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != f) /* not a socket's file */
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline void read_user_msghdr(__u64 uptr, bool raw, struct peer *p)
{
	struct user_msghdr64 m;
	__u64 base;

	if (bpf_probe_read_user(&m, sizeof(m), (void *)uptr))
		return;
	read_sockaddr((void *)m.msg_name, m.msg_namelen, true, p);
	if (raw && m.msg_iov && m.msg_iovlen &&
	    !bpf_probe_read_user(&base, sizeof(base), (void *)m.msg_iov))
		read_head((void *)base, p);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(proc_tp_sys_enter, struct pt_regs *regs, long id)
{
	__u64 tid, arg;
	__u32 zero = 0;
	struct send_ctx *c;
	struct sock *sk;
	__u16 type, family;

	if (id != __NR_sendto && id != __NR_sendmsg && id != __NR_sendmmsg)
		return 0;
	sk = fd_sock((int)SYSCALL_ARG0(regs));
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	type = BPF_CORE_READ(sk, sk_type);
	if ((family != AF_INET && family != AF_INET6) || type == SOCK_STREAM)
		return 0;
	c = bpf_map_lookup_elem(&send_scratch, &zero);
	if (!c)
		return 0;
	__builtin_memset(c, 0, sizeof(*c));
	c->sk = (__u64)sk;
	arg = SYSCALL_ARG1(regs);
	if (id == __NR_sendto) {
		read_sockaddr((void *)SYSCALL_ARG4(regs), (int)SYSCALL_ARG5(regs), true, &c->p);
		if (type == SOCK_RAW)
			read_head((void *)arg, &c->p);
	} else if (id == __NR_sendmsg) {
		read_user_msghdr(arg, type == SOCK_RAW, &c->p);
	} else {
		c->kind = SEND_MMSG;
		c->vec = arg;
		c->vlen = (__u32)SYSCALL_ARG2(regs);
	}
	tid = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&send_ctxs, &tid, c, BPF_ANY);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(proc_tp_send, struct sock *sk, int ret, int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct send_ctx *c = bpf_map_lookup_elem(&send_ctxs, &id);
	struct peer p = {};
	bool have = false;

	if (c && c->sk == (__u64)sk) {
		if (c->kind == SEND_MMSG) {
			if (c->idx < c->vlen) {
				read_user_msghdr(c->vec + (__u64)c->idx * MMSGHDR64_SIZE,
						 BPF_CORE_READ(sk, sk_type) == SOCK_RAW, &p);
				have = true;
			}
			if (++c->idx >= c->vlen)
				bpf_map_delete_elem(&send_ctxs, &id);
		} else {
			p = c->p;
			have = true;
			bpf_map_delete_elem(&send_ctxs, &id);
		}
	}
	if (ret > 0)
		count_event(sk, ret, FLOW_DIR_EGRESS, have ? &p : NULL, NULL, FLOW_KIND_DATA);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(proc_tp_recv, struct sock *sk, int ret, int flags)
{
	finish_recv(sk, ret, flags);
	return 0;
}

/* A datagram being freed after its receive (skb_consume_udp,
 * skb_free_datagram): the peer, for the sock_recv_length that follows. This
 * fires for every skb the kernel frees normally: cheap checks first. */
SEC("tp_btf/consume_skb")
int BPF_PROG(proc_tp_consume, struct sk_buff *skb)
{
	__be16 l3 = skb->protocol;

	if (l3 != bpf_htons(ETH_P_IP) && l3 != bpf_htons(ETH_P_IPV6))
		return 0;
	if (((struct task_struct *)bpf_get_current_task_btf())->flags & PF_KTHREAD)
		return 0; /* no receive call runs in a kernel thread's softirq */
	stash_rx(NULL, skb, false);
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
	bpf_map_update_elem(&rx_peers, &id, &p, BPF_ANY);
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

SEC("fentry/inet_sendmsg")
int BPF_PROG(proc_fe_send4, struct socket *sock, struct msghdr *msg, __u64 size)
{
	stash_send_msg(sock, msg, false);
	return 0;
}

SEC("fexit/inet_sendmsg")
int BPF_PROG(proc_fx_send4, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	finish_send(BPF_CORE_READ(sock, sk), ret);
	return 0;
}

SEC("fentry/inet6_sendmsg")
int BPF_PROG(proc_fe_send6, struct socket *sock, struct msghdr *msg, __u64 size)
{
	stash_send_msg(sock, msg, false);
	return 0;
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(proc_fx_send6, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	finish_send(BPF_CORE_READ(sock, sk), ret);
	return 0;
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(proc_fx_recv4, struct socket *sock, struct msghdr *msg, __u64 size, int flags, int ret)
{
	finish_recv(BPF_CORE_READ(sock, sk), ret, flags);
	return 0;
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(proc_fx_recv6, struct socket *sock, struct msghdr *msg, __u64 size, int flags, int ret)
{
	finish_recv(BPF_CORE_READ(sock, sk), ret, flags);
	return 0;
}

/* IPv6 raw and ping sockets (inet6_sockraw_ops) receive through it. */
SEC("fexit/sock_common_recvmsg")
int BPF_PROG(proc_fx_recv_common, struct socket *sock, struct msghdr *msg, __u64 size, int flags, int ret)
{
	finish_recv(BPF_CORE_READ(sock, sk), ret, flags);
	return 0;
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(proc_fe_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	stash_rx(sk, skb, true);
	return 0;
}

SEC("fentry/skb_free_datagram")
int BPF_PROG(proc_fe_free_datagram, struct sock *sk, struct sk_buff *skb)
{
	stash_rx(sk, skb, true);
	return 0;
}

/* ---- kprobe backend ----------------------------------------------------------------- */

SEC("kprobe/inet_sendmsg")
int BPF_KPROBE(proc_kp_send4, struct socket *sock, struct msghdr *msg)
{
	stash_send_msg(sock, msg, true);
	return 0;
}

SEC("kretprobe/inet_sendmsg")
int BPF_KRETPROBE(proc_krp_send4, int ret)
{
	finish_send(NULL, ret);
	return 0;
}

SEC("kprobe/inet6_sendmsg")
int BPF_KPROBE(proc_kp_send6, struct socket *sock, struct msghdr *msg)
{
	stash_send_msg(sock, msg, true);
	return 0;
}

SEC("kretprobe/inet6_sendmsg")
int BPF_KRETPROBE(proc_krp_send6, int ret)
{
	finish_send(NULL, ret);
	return 0;
}

static __always_inline void kp_recv_start(struct socket *sock, int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct recv_ctx c = {
		.sk = (__u64)BPF_CORE_READ(sock, sk),
		.flags = flags,
	};

	bpf_map_update_elem(&recv_ctxs, &id, &c, BPF_ANY);
}

static __always_inline void kp_recv_end(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct recv_ctx *c = bpf_map_lookup_elem(&recv_ctxs, &id);
	struct sock *sk;
	int flags;

	if (!c)
		return;
	sk = (struct sock *)c->sk;
	flags = c->flags;
	bpf_map_delete_elem(&recv_ctxs, &id);
	finish_recv(sk, ret, flags);
}

SEC("kprobe/inet_recvmsg")
int BPF_KPROBE(proc_kp_recv4, struct socket *sock, struct msghdr *msg, __u64 size, int flags)
{
	kp_recv_start(sock, flags);
	return 0;
}

SEC("kretprobe/inet_recvmsg")
int BPF_KRETPROBE(proc_krp_recv4, int ret)
{
	kp_recv_end(ret);
	return 0;
}

SEC("kprobe/inet6_recvmsg")
int BPF_KPROBE(proc_kp_recv6, struct socket *sock, struct msghdr *msg, __u64 size, int flags)
{
	kp_recv_start(sock, flags);
	return 0;
}

SEC("kretprobe/inet6_recvmsg")
int BPF_KRETPROBE(proc_krp_recv6, int ret)
{
	kp_recv_end(ret);
	return 0;
}

SEC("kprobe/sock_common_recvmsg")
int BPF_KPROBE(proc_kp_recv_common, struct socket *sock, struct msghdr *msg, __u64 size, int flags)
{
	kp_recv_start(sock, flags);
	return 0;
}

SEC("kretprobe/sock_common_recvmsg")
int BPF_KRETPROBE(proc_krp_recv_common, int ret)
{
	kp_recv_end(ret);
	return 0;
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(proc_kp_consume_udp, struct sock *sk, struct sk_buff *skb)
{
	stash_rx(sk, skb, true);
	return 0;
}

SEC("kprobe/skb_free_datagram")
int BPF_KPROBE(proc_kp_free_datagram, struct sock *sk, struct sk_buff *skb)
{
	stash_rx(sk, skb, true);
	return 0;
}

/* ---- every backend -------------------------------------------------------------------- */

/* Retransmissions and socket ends from the tracepoints in every backend:
 * the kernel may inline the functions around them (6.1 does). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans, struct sock *sk, struct sk_buff *skb)
{
	count_retransmit(sk, skb);
	return 0;
}

/* 6.13+: the tracepoint also fires for failed retransmissions, with err. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans_err, struct sock *sk, struct sk_buff *skb, int err)
{
	if (!err)
		count_retransmit(sk, skb);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(proc_tp_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate == TCP_CLOSE)
		forget_socket(sk);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(proc_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	emit_cgroup_event(cgrp, path);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
