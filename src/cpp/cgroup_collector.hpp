// cgroup_collector.hpp - cgroup mode: cgroup.bpf.c on a cgroup v2 directory.
//
// Attaches, all or nothing and every one through a BPF link (closing the fd,
// or the process dying, detaches it):
//   tracepoints  cgroup_mkdir, sched_process_fork, sock_send_length,
//                sock_recv_length (if the kernel has them: 6.3+ for the
//                socket ones)
//   cgroup       sock_create, sock_release, sock_ops, then - after the
//                start-time scan has filled the owner map - cgroup_skb
//                egress and ingress.
// Flows read like every mode's (flow_table.hpp); cgroup ids resolve to paths
// through a bounded cache fed by a tree scan and cgroup_mkdir records.
#pragma once

#include "flow_drain.hpp"

#include <atomic>
#include <deque>

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "l7.h" // struct l7_sig: the skeleton shows the signature table (.data)
#include "cgroup.skel.h"
#include "cgroup_paths.hpp"
#include "fd.hpp"
#include "flow.h"
#include "link.hpp"
#include "skeleton.hpp"

namespace pktstat {

PKTSTAT_SKEL_OPS(cgroup_bpf);

struct CgroupOptions {
	std::string mount_root;     // the cgroup v2 mount, e.g. /sys/fs/cgroup
	std::string rel_path = "/"; // the target directory relative to it
	// Where the mount sits in the hierarchy ("/" unless a sub-cgroup is
	// mounted, as in containers): cgroup_mkdir reports hierarchy paths.
	std::string hier_root = "/";
	uint32_t max_entries = 65536;
	uint32_t owner_entries = 65536; // sockets whose owner is remembered (LRU)
	uint32_t path_cache = 16384;    // cgroup id -> path entries kept
	bool scan_sockets = true;       // map the sockets that exist at start
};

struct ScanStats {
	size_t netns = 0, sockets = 0, in_cgroup = 0, owned = 0, shared = 0, unclaimed = 0, listeners = 0,
	       processes = 0, cgroups = 0;
	double seconds = 0;
};

class CgroupCollector {
      public:
	explicit CgroupCollector(const CgroupOptions &opts); // opens, configures, loads
	CgroupCollector(const CgroupCollector &) = delete;
	CgroupCollector &operator=(const CgroupCollector &) = delete;
	~CgroupCollector();

	void attach();          // all or nothing
	void detach() noexcept; // idempotent
	bool attached() const noexcept { return !links_.empty(); }
	std::string attach_path() const; // "cgroup_skb" or ""
	// Which owner sources are live: "sock_create", "sock_ops", "send/recv tracepoints", "start scan".
	std::vector<std::string> owner_sources() const;

	uint64_t cgroup_id() const noexcept { return cgroup_id_; }
	const ScanStats &scan_stats() const noexcept { return scan_; }
	std::vector<uint64_t> owner_stats() const; // enum owner_stat, summed over CPUs

	// Paths of `ids` (relative to the mount; "" where unknown), after taking
	// in pending cgroup_mkdir records and, if some id is still unknown, one
	// rescan of the subtree.
	std::unordered_map<uint64_t, std::string> resolve_cgroups(const std::vector<uint64_t> &ids);

	struct OwnerEntry {
		uint64_t cookie;
		sock_owner owner;
	};
	std::vector<OwnerEntry> owners() const; // the socket-cookie -> owner map
	// Owner entries of released sockets removed so far (at drains, a grace
	// period after the release: reap_released).
	uint64_t owners_removed() const noexcept { return removed_; }
	static constexpr uint64_t kReapGraceNs = 1000000000ULL; // for a closed socket's last packets

	// CLOCK_REALTIME - CLOCK_MONOTONIC taken once at load: one offset for the
	// whole capture, so a flow's timestamps do not jitter between reads.
	int64_t epoch_offset_ns() const noexcept { return epoch_offset_ns_; }

	int flows_fd() const { return bpf_map__fd(skel_->maps.flows); }
	int stats_fd() const { return bpf_map__fd(skel_->maps.stats); }
	// The two-sided flow table's drains and the lifetime table (flow_drain.hpp).
	FlowDrain &drainer() const { return *drain_; }
	const CgroupOptions &options() const noexcept { return opts_; }

      private:
	void scan_existing_sockets();
	void reap_released(); // after each drain

	CgroupOptions opts_;
	Skeleton<cgroup_bpf> skel_;
	UniqueFd cgroup_fd_;
	uint64_t cgroup_id_ = 0;
	int64_t epoch_offset_ns_ = 0;
	std::unique_ptr<FlowDrain> drain_;
	bool have_sock_tps_ = false;
	std::vector<Link> links_;
	CgroupResolver cgroups_;
	std::unordered_set<uint64_t> subtree_;
	ScanStats scan_;
	std::deque<std::pair<uint64_t, uint64_t>>
	    released_; // (CLOCK_MONOTONIC ns seen, cookie), oldest first
	std::atomic<uint64_t> removed_{0};
};

} // namespace pktstat
