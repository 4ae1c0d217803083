// replay_frame.hpp - how one capture record becomes BPF_PROG_TEST_RUN data.
//
// Kept apart from replay.cpp, free of libbpf and of any kernel call, so the
// fuzz target (fuzz/pcap_replay_fuzz.cpp) runs exactly what replay runs on
// each record, without privilege.
//
// Link types other than Ethernet get a synthesised 14-byte Ethernet header
// (addresses zero) with the ethertype their own header gives (Linux cooked
// SLL/SLL2) or implies (raw IP by its version nibble, BSD loopback by its
// address family). Records the kernel would refuse as test-run data are not
// run: they are counted by the engine as unparsed (the program's parser would
// count them unparsed too).
#pragma once

#include <cstdint>

namespace pktstat {

// How the frames of one link type become Ethernet frames.
enum class LinkKind { Ethernet, Sll, Sll2, RawIp, Ipv4, Ipv6, BsdLoopback };

// The link kind replay uses for a DLT value, or false if it has none.
bool link_kind(int dlt, LinkKind &out);

// What to do with one record.
struct FramePlan {
	enum Action {
		Run,            // give data[0, len) to the program
		EngineUnparsed, // not run: an incomplete link-layer header, or an IPv4/IPv6
		                // ethertype followed by less than a whole IP header
	};
	Action action = EngineUnparsed;
	const uint8_t *data = nullptr; // the record itself, or `buf` for a synthesised header
	uint32_t len = 0;              // ETH_HLEN <= len <= max_data when action == Run
	bool clipped = false;          // the frame was longer than max_data: cut to it
};

// Plan record `p` of `caplen` captured bytes for `kind`. `buf` must hold at
// least `max_data` bytes (max_data >= ETH_HLEN: the kernel's test-run limit);
// it is written only for non-Ethernet link types.
FramePlan plan_frame(LinkKind kind, const uint8_t *p, uint32_t caplen, uint32_t max_data, uint8_t *buf);

} // namespace pktstat
