// flow_table.hpp - reading the kernel's flow and counter maps.
//
// Reads use bpf_map_lookup_batch (one syscall per few thousand flows) and fall
// back to get_next_key + lookup on kernels without batch ops. Per-CPU values
// are summed here, so Python never sees per-CPU arrays: packets and bytes add
// up, first_seen is the earliest and last_seen the latest of the CPUs that
// saw the flow, the TCP flag bytes OR and the SYN/FIN/RST counts add up, the
// TCP health merges (add_health: a round trip lands on the CPU that saw its
// echo, which may have carried none of the flow's packets), the application
// label is the one any CPU recognised (merge_app).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flow.h"
#include "l7.h"

namespace pktstat {

struct MapShape {
	uint32_t key_size = 0;   // sizeof(flow_tuple) or sizeof(flow_key)
	uint32_t value_size = 0; // sizeof(flow_value)
	uint32_t max_entries = 0;
	bool percpu = false;
};

MapShape map_shape(int map_fd);

// a + b for a 32-bit count of flow_value: saturates at 2^32-1.
inline uint32_t add_count32(uint32_t a, uint32_t b) noexcept {
	const uint32_t s = a + b;
	return s < a ? UINT32_MAX : s;
}

// The application label of two values of one flow (l7.h enum l7_app): the
// first recognised label stays; otherwise the higher state ("unknown" over
// "not looked at yet"). A flow is examined again after each drain (its value
// in the other side starts empty), so a later interval's guess from mid-stream
// bytes never replaces the label of its first payload packets.
inline uint8_t merge_app(uint8_t a, uint8_t b) noexcept {
	return a > L7_APP_UNKNOWN ? a : std::max(a, b);
}

// Fold the TCP health of `b` into `a`: counts and sums add, the RTT minimum
// and maximum over the samples of both.
inline void add_health(flow_health &a, const flow_health &b) noexcept {
	a.retrans_packets = add_count32(a.retrans_packets, b.retrans_packets);
	a.retrans_bytes += b.retrans_bytes;
	if (!b.rtt_samples)
		return;
	if (!a.rtt_samples || b.rtt_min_ns < a.rtt_min_ns)
		a.rtt_min_ns = b.rtt_min_ns;
	a.rtt_max_ns = std::max(a.rtt_max_ns, b.rtt_max_ns);
	a.rtt_sum_ns += b.rtt_sum_ns;
	a.rtt_samples = add_count32(a.rtt_samples, b.rtt_samples);
}

// Fold the TCP fields, the health and the application label of `b` into `a`
// (CPUs, intervals, a flow's lifetime).
inline void add_tcp_counts(flow_value &a, const flow_value &b) noexcept {
	a.app = merge_app(a.app, b.app);
	a.app_tries = std::max(a.app_tries, b.app_tries);
	a.app_empty = std::max(a.app_empty, b.app_empty);
	a.tcp_flags |= b.tcp_flags;
	a.syn_packets = add_count32(a.syn_packets, b.syn_packets);
	a.fin_packets = add_count32(a.fin_packets, b.fin_packets);
	a.rst_packets = add_count32(a.rst_packets, b.rst_packets);
	add_health(a.health, b.health);
}

// All flows of a flow map. `ts_offset_ns` is added to first/last seen (it
// turns CLOCK_MONOTONIC kernel stamps into Unix-epoch nanoseconds; 0 where
// the program already stores epoch time, as replay does).
// `use_batch` false forces the per-key iteration path (for tests/bench).
std::vector<flow_record> read_flows(int map_fd, int64_t ts_offset_ns, bool use_batch = true);
// The same, deleting what it read (lookup_and_delete_batch; get_next_key +
// lookup + delete as the fallback): for a map no program writes meanwhile.
// `into` (may be null): a buffer of the caller's to fill instead of the spare.
std::vector<flow_record> read_flows_impl(int map_fd, int64_t ts_offset_ns, bool use_batch, bool take,
                                         std::vector<flow_record> *into = nullptr);
std::vector<flow_record> take_flows(int map_fd, int64_t ts_offset_ns, bool use_batch = true,
                                    std::vector<flow_record> *into = nullptr);

// The record buffer of a snapshot Python has released is kept for the next
// read_flows: its pages are already faulted in, which a fresh buffer of 1M
// records pays ~50-100 ms for. One spare at most (the larger), so memory no
// snapshot uses stays bounded by the largest snapshot read; a read takes it
// only if it fits (room <= capacity <= 2 x room), so a small snapshot never
// pins a large buffer. take_spare_records returns an empty vector with at
// least `room` capacity.
std::vector<flow_record> take_spare_records(std::size_t room);
void release_records(std::vector<flow_record> &&v) noexcept;
void drop_spare_records() noexcept; // free the spare (tests)

// Delete every entry of a hash map no program writes meanwhile.
void empty_map(int map_fd);

// Number of entries in a flow map (iterates keys only).
uint64_t count_entries(int map_fd);

// The per-direction conservation counters, summed over CPUs.
std::vector<dir_stats> read_stats(int stats_fd);

// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns, now.
int64_t monotonic_to_epoch_offset_ns();

// CLOCK_MONOTONIC now + `offset`: now in the epoch time of a capture's records.
uint64_t epoch_now_ns(int64_t offset);

// Number of possible CPUs (the width of per-CPU values).
int possible_cpus();

} // namespace pktstat
