/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * owner_ktypes.bpf.h - the few kernel structs the cgroup-mode programs read,
 * declared once and minimally. preserve_access_index makes every field
 * access a CO-RE relocation against the running kernel's BTF, so only the
 * names matter, not the layout written here. `___old` flavours cover fields
 * that changed (struct file's reference count became file_ref_t in 6.13).
 */
#ifndef PKTSTAT_OWNER_KTYPES_BPF_H
#define PKTSTAT_OWNER_KTYPES_BPF_H

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

struct sock_common {
	struct {
		__s64 counter;
	} skc_cookie; /* atomic64_t; 0 until someone asks for the cookie */
};

struct socket;

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
};

struct file {
	struct {
		struct {
			__s64 counter;
		} refcnt; /* references - 1 */
	} f_ref;      /* file_ref_t, 6.13+ */
};

struct file___old {
	struct {
		__s64 counter;
	} f_count; /* atomic_long_t: references */
};

struct socket {
	struct file *file;
};

struct files_struct {
	struct {
		int counter;
	} count; /* tasks sharing this fd table */
};

struct task_struct {
	unsigned int flags;
	int tgid;
	struct task_struct *group_leader;
	char comm[16];
	struct files_struct *files;
};

#pragma clang attribute pop

#define PF_KTHREAD 0x00200000

#endif /* PKTSTAT_OWNER_KTYPES_BPF_H */
