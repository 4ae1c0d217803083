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
 * forgets closed TCP sockets at tp_btf/inet_sock_set_state: the kernel may
 * inline the functions around these tracepoints. process_owners is the one
 * per-socket map, and it holds TCP sockets only (what retransmissions need);
 * per-thread state lives in task storage, freed with the thread.
 *
 * This file holds the maps and the programs of every backend; the rest is in
 * its parts (one object, one skeleton): process_sock.bpf.h (socket readers),
 * process_account.bpf.h (accounting), process_tp.bpf.h, process_fentry.bpf.h
 * and process_kprobe.bpf.h (the backends).
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

/* struct sock * -> the process last seen sending on it (TCP, not MPTCP:
 * MPTCP retransmits on its subflows, and its own state changes do not pass
 * inet_sock_set_state). Removed at the socket's TCP_CLOSE; sized by the
 * engine (owner_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct proc_owner);
} process_owners SEC(".maps");

/* jiffies64 when the first process_owners entry was recorded (0: none yet). */
__u64 owners_since = 0;

/* A datagram's peer (and, on receive, its local end) as its headers or the
 * caller's msg_name say. */
struct peer {
	__u8 raddr[16]; /* remote address (v4-mapped for IPv4) */
	__u64 sk;       /* the socket it belongs to, 0 = not known */
	__u32 l4len;    /* receive: the L4 length the IP header gives (~0: unknown) */
	__u16 rport;    /* host order; for ICMP: type << 8 | code */
	__u16 lport;
	__u16 icmp_id; /* receive: the echo identifier */
	__u8 ipver;
	__u8 proto; /* receive: the L4 protocol; 0 = take the socket's */
	__u8 has_raddr;
	__u8 has_icmp; /* icmp_type/code are known */
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

/* The parts, in this order: each uses what the ones before it define. */
#include "process_sock.bpf.h"
#include "process_account.bpf.h"
#include "process_tp.bpf.h"
#include "process_fentry.bpf.h"
#include "process_kprobe.bpf.h"

/* ---- every backend -------------------------------------------------------------------- */

/* Retransmissions and socket ends from the tracepoints in every backend:
 * the kernel may inline the functions around them (6.1 does). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans, struct sock *sk, struct sk_buff *skb) {
	count_retransmit(sk, skb->len);
	return 0;
}

/* 6.13+: the tracepoint also fires for failed retransmissions, with err. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(proc_tp_retrans_err, struct sock *sk, struct sk_buff *skb, int err) {
	if (!err)
		count_retransmit(sk, skb->len);
	return 0;
}

/* A TCP socket's close: nothing is sent on it after TCP_CLOSE (a socket
 * reconnected after a disconnect gets a new entry at its next send), so its
 * owner goes, and closed sockets never push live sockets' owners out. A
 * socket without its entry that sent data since the first owner was
 * recorded (its last data, lsndtime, widened to 64 bits against the clock:
 * right unless it was idle for 2^32 jiffies) lost its entry to the LRU map
 * while it lived: counted. Sockets whose last data went before that never
 * had an entry; MPTCP subflows neither (the MPTCP socket's calls are what
 * is counted). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(proc_tp_state, struct sock *sk, int oldstate, int newstate) {
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 key = (__u64)sk, now, last;

	if (newstate != TCP_CLOSE)
		return 0;
	if (!bpf_map_delete_elem(&process_owners, &key)) {
		proc_stat_add(PROC_STAT_OWNERS_RELEASED, 1);
		return 0;
	}
	if (!owners_since || sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (bpf_core_field_exists(tp->is_mptcp) && BPF_CORE_READ(tp, is_mptcp))
		return 0;
	if (!BPF_CORE_READ(tp, bytes_sent))
		return 0;
	now = bpf_jiffies64();
	last = now - (__u32)((__u32)now - BPF_CORE_READ(tp, lsndtime));
	/* a jiffy of slack: the first owner's data may leave before its send returns */
	if (last + 1 >= owners_since)
		proc_stat_add(PROC_STAT_OWNERS_EVICTED, 1);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(proc_cgroup_mkdir, struct cgroup *cgrp, const char *path) {
	emit_cgroup_event(cgrp, path);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
