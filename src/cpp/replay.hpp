// replay.hpp - running capture files through the TC program offline.
//
// A Replayer loads its own tc.bpf.c skeleton with cfg_replay set, so the very
// program that counts live traffic counts the frames of a pcap or pcapng file
// (read with libpcap): each frame goes through tc_ingress by BPF_PROG_TEST_RUN,
// with its timestamp and original wire length in __sk_buff->cb[] (enum
// replay_cb). Nothing is attached to any interface.
//
// Link types other than Ethernet are turned into Ethernet frames by putting a
// 14-byte Ethernet header with the right ethertype in front of the network
// header (Linux cooked SLL/SLL2 give the ethertype, raw IP and BSD loopback
// imply it). Bytes counted are always the record's original length.
//
// The kernel takes test-run data of at least ETH_HLEN and at most about a page
// minus its head- and tailroom (probed once per Replayer): longer frames are
// given clipped (the program reads headers only; the byte count comes from
// cb), and frames it refuses (see ReplayCounters) are counted here, as
// unparsed, so the conservation invariant still holds.
#pragma once

#include "flow_drain.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flow.h"
#include "pcap_source.hpp"  // CaptureError
#include "replay_frame.hpp" // LinkKind, plan_frame
#include "tc_collector.hpp" // Skeleton<tc_bpf> and its SkelOps

namespace pktstat {

// Engine-side counters: what happened to frames before the kernel saw them.
struct ReplayCounters {
	uint64_t frames = 0;        // records read (files) or given (frames API)
	uint64_t bytes = 0;         // sum of their original lengths
	uint64_t kernel_frames = 0; // run through the program
	// Frames the kernel refuses as test-run data, counted here as unparsed
	// (the program's parser would count them unparsed too): an incomplete
	// link-layer header, or an IPv4/IPv6 ethertype followed by less than a
	// whole IPv4/IPv6 header (6.x kernels reject those with EINVAL).
	uint64_t engine_unparsed_frames = 0;
	uint64_t engine_unparsed_bytes = 0;
	uint64_t clipped_frames = 0;                   // longer than the test-run limit: given clipped
	uint64_t earliest_ts_ns = 0, latest_ts_ns = 0; // of all frames (files need not be in order)
};

// One file's outcome.
struct FileResult {
	int linktype = 0;
	std::string linktype_name;        // e.g. "EN10MB"
	std::string linktype_description; // e.g. "Ethernet"
	uint64_t frames = 0;              // records read from this file
	std::string damage;               // non-empty: reading stopped early, with libpcap's reason
};

// Progress: (frames so far, file offset in bytes, file size in bytes).
// Called with the GIL released by the engine: the binding re-acquires it.
using ProgressFn = std::function<void(uint64_t, uint64_t, uint64_t)>;

class Replayer {
      public:
	// opens, configures, loads, probes the size limit; `arp`: key ARP frames as flows;
	// `tcp_health`: track TCP retransmissions and round trips
	explicit Replayer(uint32_t max_entries, bool arp = true, bool tcp_health = true);
	~Replayer();
	Replayer(const Replayer &) = delete;
	Replayer &operator=(const Replayer &) = delete;

	// Run every frame of a pcap/pcapng file. Throws SysError for a file that
	// cannot be opened, CaptureError for an unreadable header or a link type
	// replay does not decode. A read error mid-file ends the loop and is
	// returned in `damage`, with what was counted so far kept.
	FileResult replay_file(const std::string &path, const ProgressFn &progress = {},
	                       uint64_t every = 1 << 16);

	// The same in steps, for interval streams: open_file() checks the file
	// (throwing as replay_file does), advance(until) runs the frames whose
	// timestamp is before `until` and returns true while frames remain (the
	// next one's timestamp is then next_ts()). The file is closed at its end
	// or its damage; file() says how it went.
	const FileResult &open_file(const std::string &path);
	bool advance(uint64_t until_ts_ns, const ProgressFn &progress = {}, uint64_t every = 1 << 16);
	uint64_t next_ts() const noexcept { return next_.ts; }
	const FileResult &file() const noexcept { return file_; }

	// Run frames given in memory, as if read from a file of link type `dlt`
	// (tests, tools). ts_ns and wire_len may be empty (0 and the frame's
	// length) or hold one value per frame.
	void replay_frames(int dlt, const std::vector<std::string> &frames,
	                   const std::vector<uint64_t> &ts_ns, const std::vector<uint32_t> &wire_len);

	// Delete every flow and zero every counter (kernel and engine side).
	void clear();

	// The kernel's per-direction counters with the engine-side unparsed frames
	// added to FLOW_DIR_NONE's packets and unparsed counts.
	std::vector<dir_stats> read_stats() const;
	const ReplayCounters &counters() const noexcept { return counters_; }

	int flows_fd() const { return bpf_map__fd(skel_->maps.flows); }
	int stats_fd() const { return bpf_map__fd(skel_->maps.stats); }
	int prog_fd() const noexcept { return prog_fd_; } // the program every frame runs through
	// The flow table's drains and the lifetime table (flow_drain.hpp): drain()
	// adds the engine-side unparsed frames since the previous drain.
	FlowDrain &drainer() const { return *drain_; }
	Interval drain(uint64_t now_ns, bool timeouts, bool end, bool use_batch = true);
	uint32_t max_entries() const noexcept { return max_entries_; }
	uint32_t max_data() const noexcept { return max_data_; } // largest test-run data accepted

	// The link kind replay uses for a DLT value, or false if it has none.
	static bool link_kind(int dlt, LinkKind &out);

      private:
	struct Run; // the per-frame machinery (buffers, prepared syscall attrs)
	void probe_max_data();
	void zero_stats();

	uint32_t max_entries_;
	uint32_t max_data_ = 0;
	Skeleton<tc_bpf> skel_;
	int prog_fd_ = -1;
	std::unique_ptr<FlowDrain> drain_;
	ReplayCounters drained_; // the engine counters at the previous drain
	ReplayCounters counters_;

	// The open file (between open_file and its end) and the frame read from it
	// but not run yet (its timestamp was past the last `until`).
	struct Pending {
		bool valid = false;
		const uint8_t *data = nullptr;
		uint32_t caplen = 0, wire = 0;
		uint64_t ts = 0;
	};
	std::unique_ptr<PcapSource> src_;
	std::unique_ptr<Run> run_;
	Pending next_;
	FileResult file_;
};

} // namespace pktstat
