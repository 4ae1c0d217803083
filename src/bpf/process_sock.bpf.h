/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * process_sock.bpf.h - small helpers, and the socket readers of process mode: what a
 * socket says about itself (family, type, ports, addresses), the peer of a
 * datagram from a sockaddr, from its payload head or from its headers.
 *
 * Part of process.bpf.c (one object, one skeleton): included there, after
 * its maps and the headers before it, and by nothing else.
 */
#ifndef PKTSTAT_PROCESS_SOCK_BPF_H
#define PKTSTAT_PROCESS_SOCK_BPF_H

/* ---- helpers ----------------------------------------------------------------- */

static __always_inline void proc_stat_add(__u32 i, __u64 v) {
	__u64 *c = bpf_map_lookup_elem(&proc_stats, &i);

	if (c)
		*c += v;
}

static __always_inline void set_v4(__u8 *a, __be32 addr) {
	__builtin_memset(a, 0, 10);
	a[10] = 0xff;
	a[11] = 0xff;
	__builtin_memcpy(a + 12, &addr, 4);
}

static __always_inline bool v4mapped(const __u8 *a) {
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

static __always_inline bool all_zero(const __u8 *a) {
	const __u64 *w = (const __u64 *)a;

	return w[0] == 0 && w[1] == 0;
}

static __always_inline bool icmp_proto(__u16 proto) {
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

/* The calling thread's state (created on first use when `create`). */
static __always_inline struct thread_state *thread(bool create) {
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

static __always_inline bool sk_info_btf(struct sock *sk, struct sk_info *si) {
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

static __always_inline bool sk_info_probe(struct sock *sk, struct sk_info *si) {
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
static __always_inline bool read_sockaddr(const void *addr, int len, bool user, struct peer *p) {
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
		err = user ? bpf_probe_read_user(sa + 16, 8, addr + 16)
		           : bpf_probe_read_kernel(sa + 16, 8, addr + 16);
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
static __always_inline void read_head(const void *ubuf, struct peer *p) {
	__u8 h[2];

	if (ubuf && !bpf_probe_read_user(h, sizeof(h), ubuf)) {
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		p->has_icmp = 1;
	}
}

/* The first payload bytes of a kernel msghdr (its iov_iter has not been
 * consumed yet: call at function entry). */
static __always_inline void read_msg_head(struct msghdr *msg, struct peer *p) {
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
static __always_inline bool skb_peer(unsigned char *head, __u16 nh, __u16 th, __be16 l3, struct peer *p) {
	unsigned char *l4;
	__u8 h[8];

	if (l3 == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.version != 4 || ip.ihl < 5)
			return false;
		if (ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_UDPLITE &&
		    ip.protocol != IPPROTO_ICMP)
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
		if (ip6.nexthdr != IPPROTO_UDP && ip6.nexthdr != IPPROTO_UDPLITE &&
		    ip6.nexthdr != IPPROTO_ICMPV6) {
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
static __always_inline bool rx_matches(const struct sk_info *si, const struct peer *p, long ret) {
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

#endif /* PKTSTAT_PROCESS_SOCK_BPF_H */
