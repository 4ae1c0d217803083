// flow_table.hpp - reading the kernel's flow and counter maps.
//
// Reads use bpf_map_lookup_batch (one syscall per few thousand flows) and fall
// back to get_next_key + lookup on kernels without batch ops. Per-CPU values
// are summed here, so Python never sees per-CPU arrays: packets and bytes add
// up, first_seen is the earliest and last_seen the latest of the CPUs that
// saw the flow.
#pragma once

#include <cstdint>
#include <vector>

#include "flow.h"

namespace pktstat {

struct MapShape {
	uint32_t key_size = 0;   // sizeof(flow_tuple) or sizeof(flow_key)
	uint32_t value_size = 0; // sizeof(flow_value)
	uint32_t max_entries = 0;
	bool percpu = false;
};

MapShape map_shape(int map_fd);

// All flows of a flow map. `ts_offset_ns` is added to first/last seen (it
// turns CLOCK_MONOTONIC kernel stamps into Unix-epoch nanoseconds; 0 where
// the program already stores epoch time, as replay does).
// `use_batch` false forces the per-key iteration path (for tests/bench).
std::vector<flow_record> read_flows(int map_fd, int64_t ts_offset_ns, bool use_batch = true);

// Number of entries in a flow map (iterates keys only).
uint64_t count_entries(int map_fd);

// The per-direction conservation counters, summed over CPUs.
std::vector<dir_stats> read_stats(int stats_fd);

// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns, now.
int64_t monotonic_to_epoch_offset_ns();

// Number of possible CPUs (the width of per-CPU values).
int possible_cpus();

} // namespace pktstat
