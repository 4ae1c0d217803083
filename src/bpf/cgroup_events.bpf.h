/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * cgroup_events.bpf.h - id and path of cgroup v2 directories made after the
 * start, sent to user space through a ring buffer (struct cgroup_event), so
 * that flows of short-lived cgroups still resolve to a path. Shared by the
 * modes that report cgroups (cgroup, process); each defines its own
 * tp_btf/cgroup_mkdir program around emit_cgroup_event().
 */
#ifndef PKTSTAT_CGROUP_EVENTS_BPF_H
#define PKTSTAT_CGROUP_EVENTS_BPF_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "ktypes.bpf.h"

/* Setting, written by the engine between open and load. */
const volatile int cfg_dfl_hierarchy = 0; /* hierarchy id of cgroup v2 (the default hierarchy) */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} cgroup_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgroup_event);
} event_scratch SEC(".maps");

/* Returns false if the record was lost (ring buffer full). */
static __always_inline bool emit_cgroup_event(struct cgroup *cgrp, const char *path) {
	__u32 zero = 0;
	struct cgroup_event *e;
	long n;

	if (cgrp->root->hierarchy_id != cfg_dfl_hierarchy)
		return true;
	e = bpf_map_lookup_elem(&event_scratch, &zero);
	if (!e)
		return true;
	e->id = cgrp->kn->id;
	n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	if (n <= 0)
		return true;
	e->len = n;
	__u64 size = __builtin_offsetof(struct cgroup_event, path) + (__u64)n;

	if (size > sizeof(*e))
		size = sizeof(*e);
	return bpf_ringbuf_output(&cgroup_events, e, size, 0) == 0;
}

#endif /* PKTSTAT_CGROUP_EVENTS_BPF_H */
