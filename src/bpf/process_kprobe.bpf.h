/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * process_kprobe.bpf.h - the kprobe backend of process mode: kprobes and kretprobes
 * on the same functions as the fentry backend.
 *
 * Part of process.bpf.c (one object, one skeleton): included there, after
 * its maps and the headers before it, and by nothing else.
 */
#ifndef PKTSTAT_PROCESS_KPROBE_BPF_H
#define PKTSTAT_PROCESS_KPROBE_BPF_H

/* ---- kprobe backend ----------------------------------------------------------------- */

static __always_inline void kp_send_start(struct socket *sock, struct msghdr *msg) {
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

static __always_inline void kp_send_end(long ret) {
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
		count_event(&si, ret, FLOW_DIR_EGRESS, p.has_raddr || p.has_icmp ? &p : NULL, NULL,
		            FLOW_KIND_DATA);
}

#define KPROBE_SEND(name, fn)                                                                                \
	SEC("kprobe/" #fn)                                                                                   \
	int BPF_KPROBE(proc_kp_##name, struct socket *sock, struct msghdr *msg) {                            \
		kp_send_start(sock, msg);                                                                    \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC("kretprobe/" #fn)                                                                                \
	int BPF_KRETPROBE(proc_krp_##name, int ret) {                                                        \
		kp_send_end(ret);                                                                            \
		return 0;                                                                                    \
	}

KPROBE_SEND(send4, inet_sendmsg)
KPROBE_SEND(send6, inet6_sendmsg)

static __always_inline void kp_recv_start(struct socket *sock, int flags) {
	struct thread_state *ts = thread(true);

	if (ts) {
		ts->recv_sk = (__u64)BPF_CORE_READ(sock, sk);
		ts->recv_flags = flags;
	}
}

static __always_inline void kp_recv_end(long ret) {
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

#define KPROBE_RECV(name, fn)                                                                                \
	SEC("kprobe/" #fn)                                                                                   \
	int BPF_KPROBE(proc_kp_##name, struct socket *sock, struct msghdr *msg, __u64 size, int flags) {     \
		kp_recv_start(sock, flags);                                                                  \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC("kretprobe/" #fn)                                                                                \
	int BPF_KRETPROBE(proc_krp_##name, int ret) {                                                        \
		kp_recv_end(ret);                                                                            \
		return 0;                                                                                    \
	}

KPROBE_RECV(recv4, inet_recvmsg)
KPROBE_RECV(recv6, inet6_recvmsg)
KPROBE_RECV(recv_common, sock_common_recvmsg)

static __always_inline void kp_consume(struct sock *sk, struct sk_buff *skb) {
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_type) == SOCK_STREAM)
		return;
	stash_rx((__u64)sk, BPF_CORE_READ(skb, head), BPF_CORE_READ(skb, network_header),
	         BPF_CORE_READ(skb, transport_header), BPF_CORE_READ(skb, protocol));
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(proc_kp_consume_udp, struct sock *sk, struct sk_buff *skb) {
	kp_consume(sk, skb);
	return 0;
}

SEC("kprobe/skb_free_datagram")
int BPF_KPROBE(proc_kp_free_datagram, struct sock *sk, struct sk_buff *skb) {
	kp_consume(sk, skb);
	return 0;
}

#endif /* PKTSTAT_PROCESS_KPROBE_BPF_H */
