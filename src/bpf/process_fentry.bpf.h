/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * process_fentry.bpf.h - the fentry backend of process mode: fentry/fexit on
 * inet{,6}_{send,recv}msg and sock_common_recvmsg, datagram sources at
 * skb_consume_udp and skb_free_datagram.
 *
 * Part of process.bpf.c (one object, one skeleton): included there, after
 * its maps and the headers before it, and by nothing else.
 */
#ifndef PKTSTAT_PROCESS_FENTRY_BPF_H
#define PKTSTAT_PROCESS_FENTRY_BPF_H

/* ---- fentry backend --------------------------------------------------------------- */

#define FENTRY_SEND(name, fn)                                                                                \
	SEC("fentry/" #fn)                                                                                   \
	int BPF_PROG(proc_fe_##name, struct socket *sock, struct msghdr *msg, __u64 size) {                  \
		stash_send_msg(sock->sk, sock->type, msg);                                                   \
		return 0;                                                                                    \
	}                                                                                                    \
	SEC("fexit/" #fn)                                                                                    \
	int BPF_PROG(proc_fx_##name, struct socket *sock, struct msghdr *msg, __u64 size, int ret) {         \
		struct sk_info si;                                                                           \
		if (sk_info_btf(sock->sk, &si))                                                              \
			finish_send(&si, ret);                                                               \
		return 0;                                                                                    \
	}

FENTRY_SEND(send4, inet_sendmsg)
FENTRY_SEND(send6, inet6_sendmsg)

/* IPv6 raw and ping sockets (inet6_sockraw_ops) receive through sock_common_recvmsg. */
#define FEXIT_RECV(name, fn)                                                                                 \
	SEC("fexit/" #fn)                                                                                    \
	int BPF_PROG(proc_fx_##name, struct socket *sock, struct msghdr *msg, __u64 size, int flags,         \
	             int ret) {                                                                              \
		struct sk_info si;                                                                           \
		if (sk_info_btf(sock->sk, &si))                                                              \
			finish_recv(&si, ret, flags);                                                        \
		return 0;                                                                                    \
	}

FEXIT_RECV(recv4, inet_recvmsg)
FEXIT_RECV(recv6, inet6_recvmsg)
FEXIT_RECV(recv_common, sock_common_recvmsg)

static __always_inline void fe_consume(struct sock *sk, struct sk_buff *skb) {
	__u16 family = sk->__sk_common.skc_family;

	if ((family != AF_INET && family != AF_INET6) || sk->sk_type == SOCK_STREAM)
		return;
	stash_rx((__u64)sk, skb->head, skb->network_header, skb->transport_header, skb->protocol);
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(proc_fe_consume_udp, struct sock *sk, struct sk_buff *skb, int len) {
	fe_consume(sk, skb);
	return 0;
}

SEC("fentry/skb_free_datagram")
int BPF_PROG(proc_fe_free_datagram, struct sock *sk, struct sk_buff *skb) {
	fe_consume(sk, skb);
	return 0;
}

#endif /* PKTSTAT_PROCESS_FENTRY_BPF_H */
