// process_collector.hpp - process mode: process.bpf.c, socket-level traffic
// of every process of the host, through one of three backends.
//
// The backend is chosen at construction, by probing, best first:
//   tracepoint  tp_btf sock_send_length / sock_recv_length (Linux 6.3+)
//   fentry      fentry/fexit on inet{,6}_{send,recv}msg (BPF trampolines)
//   kprobe      kprobes/kretprobes on the same functions
// A backend is tried only where the kernel's BTF (tracepoints, functions) or
// kallsyms and the kprobe PMU (kprobes) say it can work, then loaded; the
// first that loads is kept, and why the others were passed over is reported.
// A forced backend that cannot load throws (ENOTSUP: the kernel lacks it).
//
// attach() is all or nothing, every program through a BPF link.
#pragma once

#include "flow_drain.hpp"

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cgroup_paths.hpp"
#include "fd.hpp"
#include "link.hpp"
#include "process.skel.h"
#include "skeleton.hpp"

namespace pktstat {

PKTSTAT_SKEL_OPS(process_bpf);

enum class ProcessBackend { Auto, Tracepoint, Fentry, Kprobe };

const char *backend_name(ProcessBackend b);

struct ProcessOptions {
	uint32_t max_entries = 65536;
	ProcessBackend backend = ProcessBackend::Auto;
	std::string cgroup_mount;    // cgroup v2 mount for id -> path ("" = none)
	std::string hier_root = "/"; // where the mount sits in the hierarchy
	uint32_t path_cache = 16384;
	uint32_t owner_entries = 65536; // TCP sockets whose sender is remembered (LRU)
};

class ProcessCollector {
      public:
	explicit ProcessCollector(const ProcessOptions &opts); // probes, opens, loads
	ProcessCollector(const ProcessCollector &) = delete;
	ProcessCollector &operator=(const ProcessCollector &) = delete;
	~ProcessCollector();

	void attach();          // all or nothing
	void detach() noexcept; // idempotent
	bool attached() const noexcept { return !links_.empty(); }
	std::string attach_path() const; // "tracepoint", "fentry", "kprobe" once attached
	ProcessBackend backend() const noexcept { return backend_; }
	// Backends passed over, with the reason (in the order tried).
	const std::vector<std::pair<std::string, std::string>> &refused() const noexcept { return refused_; }
	// Programs of the live backend (section names), for the status.
	std::vector<std::string> hooks() const;

	std::vector<uint64_t> proc_stats() const; // enum proc_stat, summed over CPUs
	// Paths of `ids` relative to the cgroup v2 mount ("" where unknown).
	std::unordered_map<uint64_t, std::string> resolve_cgroups(const std::vector<uint64_t> &ids);

	int64_t epoch_offset_ns() const noexcept { return epoch_offset_ns_; }
	int flows_fd() const { return bpf_map__fd(skel_->get()->maps.flows); }
	int stats_fd() const { return bpf_map__fd(skel_->get()->maps.stats); }
	int owners_fd() const { return bpf_map__fd(skel_->get()->maps.process_owners); }
	// The two-sided flow table's drains and the lifetime table (flow_drain.hpp).
	FlowDrain &drainer() const { return *drain_; }
	const ProcessOptions &options() const noexcept { return opts_; }

      private:
	ProcessOptions opts_;
	std::unique_ptr<Skeleton<process_bpf>> skel_;
	ProcessBackend backend_ = ProcessBackend::Auto;
	std::vector<std::pair<std::string, std::string>> refused_;
	int64_t epoch_offset_ns_ = 0;
	std::unique_ptr<FlowDrain> drain_;
	std::vector<Link> links_;
	CgroupResolver cgroups_;
	bool scanned_ = false;
	UniqueFd cgroup_fd_; // the cgroup v2 root, for the recvmsg hooks
};

} // namespace pktstat
