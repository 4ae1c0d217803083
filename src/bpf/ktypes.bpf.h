/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * ktypes.bpf.h - the few kernel structs the tracing programs (cgroup and
 * process modes) read, declared once and minimally. preserve_access_index
 * makes every field access a CO-RE relocation against the running kernel's
 * BTF, so only the names matter, not the layout written here. `___old`
 * flavours cover fields that changed (struct file's reference count became
 * file_ref_t in 6.13; iov_iter's iovec pointer was renamed __iov in 6.4).
 */
#ifndef PKTSTAT_KTYPES_BPF_H
#define PKTSTAT_KTYPES_BPF_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct kernfs_node {
	__u64 id;
};

struct cgroup_root {
	int hierarchy_id;
};

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
};

struct in6_addr___k {
	__u8 bytes[16]; /* only its size and name (in6_addr) matter */
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num; /* local port (raw: the protocol; ping: the echo id) */
	unsigned short skc_family;
	struct in6_addr___k skc_v6_daddr;
	struct in6_addr___k skc_v6_rcv_saddr;
	struct {
		__s64 counter;
	} skc_cookie; /* atomic64_t; 0 until someone asks for the cookie */
};

struct socket;

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
	__u16 sk_type;
	__u16 sk_protocol; /* a u16 field since 5.6 */
};

/* The local port outlives skc_num, which the kernel zeroes when a socket
 * leaves its bind table (TCP_CLOSE: data may still wait to be read). */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

/* Process mode, at a TCP socket's close: did it send data (bytes_sent:
 * payload only; bytes_acked also counts the SYN and FIN), when last
 * (lsndtime: the low 32 bits of jiffies), is it an MPTCP subflow (is_mptcp:
 * CONFIG_MPTCP kernels only, checked before use). */
struct tcp_sock {
	__u64 bytes_sent;
	__u32 lsndtime;
	__u8 is_mptcp; /* bool */
};

struct file {
	struct {
		struct {
			__s64 counter;
		} refcnt;   /* references - 1 */
	} f_ref;            /* file_ref_t, 6.13+ */
	void *private_data; /* a socket's file: its struct socket */
};

struct file___old {
	struct {
		__s64 counter;
	} f_count; /* atomic_long_t: references */
};

struct socket {
	short type;
	struct file *file;
	struct sock *sk;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct {
		int counter;
	} count; /* tasks sharing this fd table */
	struct fdtable *fdt;
};

struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup v2 */
};

struct task_struct {
	unsigned int flags;
	int tgid;
	struct task_struct *group_leader;
	char comm[16];
	struct files_struct *files;
	struct css_set *cgroups;
};

struct sk_buff {
	unsigned int len;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	unsigned char *head;
};

struct iovec___k {
	void *iov_base;
	__u64 iov_len;
};

enum iter_type {
	ITER_UBUF,
	ITER_IOVEC,
};

struct iov_iter {
	__u8 iter_type;
	const struct iovec___k *__iov; /* 6.4+ */
	void *ubuf;                    /* ITER_UBUF (6.0+) */
};

struct iov_iter___old {
	const struct iovec___k *iov; /* before 6.4 */
};

struct msghdr {
	void *msg_name; /* a kernel copy of the address, or NULL */
	int msg_namelen;
	struct iov_iter msg_iter;
};

#pragma clang attribute pop

#define PF_KTHREAD 0x00200000

#endif /* PKTSTAT_KTYPES_BPF_H */
