// tc_collector.hpp - TC mode: the tc.bpf.c programs on one interface's
// ingress and egress, counting into one flow map.
#pragma once

#include "flow_drain.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "skeleton.hpp"
#include "l7.h" // struct l7_sig: the skeleton shows the signature table (.data)
#include "tc.skel.h"
#include "tc_attach.hpp"
#include "tc_claims.hpp"

namespace pktstat {

PKTSTAT_SKEL_OPS(tc_bpf);

struct TcOptions {
	int ifindex = 0;
	uint32_t max_entries = 65536;
	TcAttachMode mode = TcAttachMode::Auto;
	bool l3_device = false; // frames start at the IP header (tun, wireguard ...)
	bool arp = true;        // key ARP frames as flows (false: --no-arp, unparsed)
	bool tcp_health = true; // track retransmissions and round trips (false: --no-tcp-health)
};

// A legacy filter's identity, for the janitor that removes it if we die.
struct LegacyFilterInfo {
	std::string direction;
	uint32_t handle, priority, prog_id;
};

class TcCollector {
      public:
	explicit TcCollector(const TcOptions &opts); // opens, configures, loads
	TcCollector(const TcCollector &) = delete;
	TcCollector &operator=(const TcCollector &) = delete;

	void attach();          // ingress then egress; all or nothing
	void detach() noexcept; // idempotent
	bool attached() const noexcept { return !links_.empty(); }

	std::string attach_path() const; // "tcx", "tc-legacy" or "" when detached
	bool created_qdisc() const noexcept { return qdisc_ && qdisc_->created(); }
	std::vector<LegacyFilterInfo> legacy_filters() const;

	// CLOCK_REALTIME - CLOCK_MONOTONIC taken once at load: one offset for the
	// whole capture, so a flow's timestamps do not jitter between reads.
	int64_t epoch_offset_ns() const noexcept { return epoch_offset_ns_; }

	int flows_fd() const { return bpf_map__fd(skel_->maps.flows); }
	int stats_fd() const { return bpf_map__fd(skel_->maps.stats); }
	// The two-sided flow table's drains and the lifetime table (flow_drain.hpp).
	FlowDrain &drainer() const { return *drain_; }
	const TcOptions &options() const noexcept { return opts_; }

      private:
	TcOptions opts_;
	Skeleton<tc_bpf> skel_;
	int64_t epoch_offset_ns_ = 0;
	// Declared first: destroyed last, after everything it records is undone
	// (detach() resets it last too), so a run that dies halfway through
	// undoing still leaves the record for the next run's sweep.
	std::unique_ptr<LegacyRecord> record_;
	std::unique_ptr<FlowDrain> drain_;
	// Declared before links_: destroyed after the filters that sit on it.
	std::shared_ptr<ClsactQdisc> qdisc_;
	std::vector<std::pair<TcDir, TcAttachment>> links_;
};

} // namespace pktstat
