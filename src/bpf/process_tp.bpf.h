/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * process_tp.bpf.h - the tracepoint backend of process mode: tp_btf
 * sock_send_length/sock_recv_length, the send syscalls' arguments, datagram
 * sources at consume_skb and cgroup/recvmsg4/6.
 *
 * Part of process.bpf.c (one object, one skeleton): included there, after
 * its maps and the headers before it, and by nothing else.
 */
#ifndef PKTSTAT_PROCESS_TP_BPF_H
#define PKTSTAT_PROCESS_TP_BPF_H

/* ---- tracepoint backend --------------------------------------------------------- */

/* x86-64 and arm64 syscall argument registers, by their kernel names. */
struct pt_regs___x86 {
	unsigned long di, si, dx, r10, r8, r9;
} __attribute__((preserve_access_index));
struct pt_regs___arm64 {
	unsigned long regs[31];
} __attribute__((preserve_access_index));

#if defined(__TARGET_ARCH_x86)
#define SYSCALL_ARG(r, n)                                                                                    \
	((n) == 0   ? BPF_CORE_READ((struct pt_regs___x86 *)(r), di)                                         \
	 : (n) == 1 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), si)                                         \
	 : (n) == 2 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), dx)                                         \
	 : (n) == 4 ? BPF_CORE_READ((struct pt_regs___x86 *)(r), r8)                                         \
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
static __always_inline __u64 fd_file(int fd) {
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

static __always_inline void read_user_msghdr(__u64 uptr, bool raw, struct peer *p) {
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
static __always_inline void sys_send_start(long id, __u64 a0, __u64 a1, __u64 a2, __u64 a4, __u64 a5) {
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
int proc_tp_sendto(struct syscall_enter_args *ctx) {
	sys_send_start(__NR_sendto, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[4], ctx->args[5]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int proc_tp_sendmsg(struct syscall_enter_args *ctx) {
	sys_send_start(__NR_sendmsg, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int proc_tp_sendmmsg(struct syscall_enter_args *ctx) {
	sys_send_start(__NR_sendmmsg, ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(proc_tp_sys_enter, struct pt_regs *regs, long id) {
	if (id != __NR_sendto && id != __NR_sendmsg && id != __NR_sendmmsg)
		return 0;
	sys_send_start(id, SYSCALL_ARG(regs, 0), SYSCALL_ARG(regs, 1), SYSCALL_ARG(regs, 2),
	               SYSCALL_ARG(regs, 4), SYSCALL_ARG(regs, 5));
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(proc_tp_send, struct sock *sk, int ret, int flags) {
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
				read_user_msghdr(ts->send.vec + (__u64)ts->send.idx * MMSGHDR64_SIZE,
				                 si.type == SOCK_RAW, &p);
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
int BPF_PROG(proc_tp_recv, struct sock *sk, int ret, int flags) {
	struct sk_info si;

	if (sk_info_btf(sk, &si))
		finish_recv(&si, ret, flags);
	return 0;
}

/* A datagram being freed after its receive (skb_consume_udp,
 * skb_free_datagram): the peer, for the sock_recv_length that follows. This
 * fires for every skb the kernel frees normally: cheap checks first. */
SEC("tp_btf/consume_skb")
int BPF_PROG(proc_tp_consume, struct sk_buff *skb) {
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
static __always_inline void stash_recvmsg_addr(struct bpf_sock_addr *ctx, bool v6) {
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
int proc_tp_recvmsg4(struct bpf_sock_addr *ctx) {
	stash_recvmsg_addr(ctx, false);
	return 1;
}

SEC("cgroup/recvmsg6")
int proc_tp_recvmsg6(struct bpf_sock_addr *ctx) {
	stash_recvmsg_addr(ctx, true);
	return 1;
}

#endif /* PKTSTAT_PROCESS_TP_BPF_H */
