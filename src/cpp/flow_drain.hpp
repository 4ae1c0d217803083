// flow_drain.hpp - draining a loaded object's two-sided flow table
// (flow_add.bpf.h) into the lifetime table (flow_life.hpp).
//
// A drain of a live collector flips `flow_side` (its mmapped data section),
// waits until no program run can still hold the old side (an update of the
// ARRAY_OF_MAPS `drain_sync`: the kernel returns from it after an RCU grace
// period, and every program that counts is non-sleepable), then reads the
// old side's flow map with lookup_and_delete_batch (iteration + delete where
// the kernel has no batch ops) and its counters, and zeroes them. Every
// increment lands in exactly one interval. Replay runs programs
// synchronously, so its drain reads side 0 without flipping.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dns_cache.hpp"
#include "fd.hpp"
#include "flow.h"
#include "flow_life.hpp"

struct bpf_object;

namespace pktstat {

// Before load: size both sides of the object's flow table, and its names
// map (l7_names.bpf.h), which needs room for one interval's new names: as a
// side, but at most kNamesMaxEntries (allocated as used, but its bucket
// array is not: 16 bytes per entry).
constexpr uint32_t kNamesMaxEntries = 65536;
void set_flow_table_size(bpf_object *obj, uint32_t max_entries);

// One drain's outcome.
struct Interval {
	uint64_t start_ns = 0, end_ns = 0;          // previous drain (or load) and this one, epoch ns
	std::vector<interval_record> records;       // flows active in the interval
	std::vector<dir_stats> stats;               // the interval's counters, per direction
	std::vector<ended_record> ended;            // records handed out (timeouts, end, evictions)
	std::vector<dir_stats> totals;              // the run's counters so far (every interval)
	std::vector<name_record> names;             // the names map's entries, moved out (l7_names.bpf.h)
	uint64_t names_written = 0, names_full = 0; // the names map's counters so far
	uint64_t dns_addrs = 0, dns_addrs_full = 0; // the dns_addrs map's counters so far
	uint64_t live_flows = 0;                    // in the lifetime table after the drain
	uint64_t evicted_flows = 0;                 // retired early so far (table full)
	// What the drain cost, in ns: the wait for the programs (flip + grace
	// period), reading and emptying the old side, folding it into the
	// lifetime table (with timeouts and end records).
	uint64_t wait_ns = 0, read_ns = 0, fold_ns = 0;
};

class FlowDrain {
      public:
	// After `obj` is loaded. `live`: programs run concurrently (flip and wait).
	FlowDrain(bpf_object *obj, int64_t ts_offset_ns, bool live, uint64_t start_ns);

	// `now_ns` (epoch): the end of the interval. `timeouts`: apply the idle
	// and active timeouts at now_ns; `end`: then retire every flow (reason
	// end). `extra` (may be null) is added to the interval's counters
	// (replay's engine-side unparsed frames).
	Interval drain(uint64_t now_ns, bool timeouts, bool end, bool use_batch = true,
	               const std::vector<dir_stats> *extra = nullptr);

	// The run's counters: every interval drained, plus (peek) what the side
	// the programs count into holds now.
	std::vector<dir_stats> totals(bool peek);
	std::vector<flow_record> flows(); // every live flow's lifetime record
	// Every live flow's names (and those of the flows the last drain
	// ended): the names map's entries merged per flow (merge_name).
	std::vector<name_record> names();
	uint64_t names_full(); // names the kernel's names map had no room for, so far
	// Every live flow named by a DNS answer (dns_cache.hpp), and those the
	// last drain ended.
	std::vector<dns_name_record> dns_names();
	uint64_t dns_addrs_full(); // answers the kernel's dns_addrs map had no room for
	void set_limits(const FlowLimits &l);
	FlowLimits limits();
	uint64_t drains();
	void clear(); // empty both sides, the counters and the lifetime table
	// Called at the end of every drain (under the drain's lock): a mode's
	// housekeeping that must follow the programs' counting (cgroup mode
	// removes the owners of released sockets).
	void set_after_drain(std::function<void()> fn) { after_drain_ = std::move(fn); }

	int side_fd(int side) const { return flows_fd_[side]; }
	int stats_fd() const { return stats_fd_; }
	uint32_t active_side() const { return *side_ & 1; }

      private:
	std::vector<dir_stats> read_side_stats(uint32_t side, bool zero);
	void take_names(Interval &iv);
	void take_dns_addrs();
	void name_by_dns(const std::vector<interval_record> &recs);

	std::mutex mu_;
	int flows_fd_[2] = {-1, -1};
	int stats_fd_ = -1;
	int sync_fd_ = -1;
	int names_fd_ = -1, name_stats_fd_ = -1; // (objects whose look reads names)
	uint32_t names_key_size_ = 0;
	std::unordered_map<std::string, flow_name> names_; // by flow_key bytes
	std::vector<std::string> names_ended_;             // forgotten at the next drain
	uint64_t names_full_ = 0;
	int dns_addrs_fd_ = -1;                               // (objects whose look reads names)
	DnsCache dns_;                                        // the answers, by address
	std::unordered_map<std::string, dns_addr> dns_named_; // by flow_key bytes
	uint64_t dns_addrs_full_ = 0, data_ns_ = 0;           // data_ns_: the latest time seen
	UniqueFd sync_inner_;
	volatile uint32_t *side_ = nullptr;
	int64_t ts_offset_ns_;
	bool live_;
	uint64_t last_ns_;
	uint64_t drains_ = 0;
	FlowLifetime table_;
	std::vector<flow_record> scratch_; // the buffer drains read into, kept
	uint32_t max_entries_ = 0;         // of each side
	std::vector<dir_stats> totals_;
	std::function<void()> after_drain_;
};

} // namespace pktstat
