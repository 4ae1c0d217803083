// drop_watcher.hpp - --drops: the kernel's kfree_skb tracepoint with its drop
// reason (drops.bpf.c), counted per (flow tuple, reason) and per reason,
// beside any mode's collector. The reason names come from the running
// kernel's BTF (enum skb_drop_reason), so a newer kernel's reasons show
// without a rebuild.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "drops.h"
#include "drops.skel.h"
#include "link.hpp"
#include "skeleton.hpp"

namespace pktstat {

PKTSTAT_SKEL_OPS(drops_bpf);

struct DropOptions {
	uint32_t ifindex = 0; // 0: drops on any interface
	uint32_t netns = 0;   // 0: any network namespace, else its inode
	uint32_t max_entries = 16384;
};

struct DropEntry {
	drop_key key;
	drop_value value;
};

// The kernel's drop reasons: value -> name without the SKB_DROP_REASON_ (or
// SKB_) prefix. Throws FeatureMissing where the kernel's BTF has no enum
// skb_drop_reason or its kfree_skb tracepoint has no reason argument.
std::map<uint32_t, std::string> kernel_drop_reasons();

class DropWatcher {
      public:
	explicit DropWatcher(const DropOptions &opts); // probes, opens, configures, loads
	DropWatcher(const DropWatcher &) = delete;
	DropWatcher &operator=(const DropWatcher &) = delete;

	void attach();          // tp_btf/kfree_skb through a BPF link
	void detach() noexcept; // idempotent
	bool attached() const noexcept { return static_cast<bool>(link_); }

	const std::map<uint32_t, std::string> &reasons() const noexcept { return reasons_; }
	const DropOptions &options() const noexcept { return opts_; }
	uint32_t prog_id() const; // the kernel's id of the loaded program (bpftool prog show id ...)

	std::vector<DropEntry> read_flows() const;                         // per (tuple, reason)
	std::vector<std::pair<uint32_t, drop_value>> read_reasons() const; // per reason
	drop_stats read_stats() const;

      private:
	DropOptions opts_;
	std::map<uint32_t, std::string> reasons_;
	Skeleton<drops_bpf> skel_;
	Link link_;
};

} // namespace pktstat
