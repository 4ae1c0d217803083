// flow_life.hpp - the user-space lifetime flow table: per flow, the packets
// and bytes of the whole run, its first and last seen, the OR of its TCP
// flags and its SYN/FIN/RST counts, fed by the drained
// intervals of a collector (flow_drain.hpp).
//
// An update costs time in proportion to the flows active in the interval,
// never to all flows ever seen: the table is an open-addressing hash (linear
// probing, backward-shift deletion) over a slab of entries, and two intrusive
// lists order the live flows by last activity (for the idle timeout and for
// retiring the longest idle when the table is full) and by their last report
// (for the active timeout). Retiring walks the lists from their heads and
// stops at the first flow not due.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flow.h"

namespace pktstat {

// Why a flow's record was handed out.
enum flow_end_reason : uint8_t {
	FLOW_END_IDLE = 1,    // no packet for the idle timeout: retired
	FLOW_END_ACTIVE = 2,  // running longer than the active timeout since its last record: still live
	FLOW_END_END = 3,     // the capture ended: retired
	FLOW_END_EVICTED = 4, // the table was full (max_flows): the longest idle retired early
};

// A flow active in a drained interval: its counts in the interval (`rec`,
// first/last seen in the interval) and its lifetime totals after it.
struct interval_record {
	flow_record rec;
	uint64_t total_packets;
	uint64_t total_bytes;
	uint64_t flow_first_seen_ns; // lifetime first seen
	uint8_t flow_tcp_flags;      // lifetime OR of the TCP flags (rec has the interval's)
	uint8_t _pad[7];
};
static_assert(sizeof(interval_record) == 192, "interval_record layout");

// A flow's record handed out by a timeout, the end of the capture or an
// eviction: lifetime totals, first/last seen, TCP flags and SYN/FIN/RST
// counts in `rec`, and what the flow
// did since its previous record (the deltas of all records of a flow sum to
// its totals).
struct ended_record {
	flow_record rec;
	uint64_t delta_packets;
	uint64_t delta_bytes;
	uint8_t reason; // enum flow_end_reason
	uint8_t _pad[7];
};
static_assert(sizeof(ended_record) == 184, "ended_record layout");

struct FlowLimits {
	uint64_t idle_timeout_ns = 60ULL * 1000000000ULL;    // 0: never
	uint64_t active_timeout_ns = 300ULL * 1000000000ULL; // 0: never
	uint64_t max_flows = 1000000;                        // at least 1
};

class FlowLifetime {
      public:
	FlowLifetime();

	void set_limits(const FlowLimits &l);
	const FlowLimits &limits() const noexcept { return limits_; }

	// Fold one interval's flows in; `out` gets one interval_record per
	// input record, aligned; flows evicted to make room go to `ended`.
	void update(const std::vector<flow_record> &interval, std::vector<interval_record> &out,
	            std::vector<ended_record> &ended);

	// Hand out due records at `now_ns` (epoch ns): idle flows retired, and
	// flows running past the active timeout reported (they stay live).
	void expire(uint64_t now_ns, std::vector<ended_record> &ended);

	// Retire every live flow with `reason` (the end of a capture).
	void retire_all(uint8_t reason, std::vector<ended_record> &ended);

	// Every live flow's lifetime record.
	void live(std::vector<flow_record> &out) const;

	void clear();
	size_t size() const noexcept { return live_; }
	uint64_t evicted() const noexcept { return evicted_; } // flows retired early (table full)

      private:
	static constexpr uint32_t kNone = 0xffffffffu;
	static constexpr uint64_t kEmpty = ~0ULL;
	struct Entry {
		flow_key key;
		uint64_t packets, bytes, first_ns, last_ns;
		uint32_t syn, fin, rst;                  // flow_value's TCP counts, summed (saturating)
		uint8_t tcp_flags;                       // flow_value's tcp_flags, ORed
		uint8_t app;                             // flow_value's app (merge_app)
		uint8_t app_tries, app_empty;            // flow_value's, the largest seen
		flow_health health;                      // flow_value's, merged (add_health)
		uint64_t rep_packets, rep_bytes, rep_ns; // at the previous record handed out
		uint64_t hash;
		uint32_t idle_prev, idle_next; // by last activity, oldest first
		uint32_t act_prev, act_next;   // by last report, oldest first
	};
	struct List {
		uint32_t head = kNone, tail = kNone;
	};

	uint32_t find(const flow_key &k, uint64_t h) const;
	uint32_t insert(const flow_key &k, uint64_t h, std::vector<ended_record> &ended);
	void retire(uint32_t e, uint8_t reason, std::vector<ended_record> &ended);
	void erase_slot(uint64_t h, uint32_t e);
	void grow();
	void link_tail(List &l, uint32_t e, bool idle);
	void unlink(List &l, uint32_t e, bool idle);
	static void emit(Entry &en, uint8_t reason, std::vector<ended_record> &ended);

	FlowLimits limits_;
	std::vector<Entry> entries_; // slab; free ones are chained through idle_next
	uint32_t free_ = kNone;
	std::vector<uint64_t> slots_; // open addressing: (hash tag << 32) | entry index, or kEmpty
	uint64_t mask_ = 0;
	size_t live_ = 0;
	uint64_t evicted_ = 0;
	List idle_, act_;
};

uint64_t hash_flow_key(const flow_key &k) noexcept;

} // namespace pktstat
