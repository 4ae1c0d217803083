// xdp_collector.hpp - XDP mode: xdp.bpf.c on one interface's receive path,
// attached through a BPF link (an fd: closing it, or the process dying,
// detaches the program; nothing is left on the interface).
//
// Modes: Native (driver XDP), Generic (skb XDP, any device), Offload (the NIC
// runs the program), and Auto, which tries native, then generic, and reports
// which one attached. A failed attach leaves the interface as it was. An
// interface that already has an XDP program is never touched: attach throws
// XdpBusy naming the program that is there.
#pragma once

#include "flow_drain.hpp"

#include <cstdint>
#include <optional>
#include <string>

#include "error.hpp"
#include "fd.hpp"
#include "skeleton.hpp"
#include "l7.h" // struct l7_sig: the skeleton shows the signature table (.data)
#include "xdp.skel.h"

namespace pktstat {

PKTSTAT_SKEL_OPS(xdp_bpf);

enum class XdpMode { Auto, Native, Generic, Offload };

// What is attached to an interface at XDP, as the kernel reports it.
struct XdpState {
	uint32_t prog_id = 0;  // 0: nothing attached
	std::string mode;      // "native", "generic", "offload", "multi" or ""
	std::string prog_name; // "" if it could not be read
};

// ifindex's XDP attachments (in the calling thread's network namespace).
XdpState xdp_query(int ifindex);

// The interface already runs an XDP program: we do not replace it.
class XdpBusy : public SysError {
      public:
	XdpBusy(const std::string &what, XdpState s) : SysError(what, EBUSY), state_(std::move(s)) {}
	const XdpState &state() const noexcept { return state_; }

      private:
	XdpState state_;
};

struct XdpOptions {
	int ifindex = 0;
	uint32_t max_entries = 65536;
	XdpMode mode = XdpMode::Auto;
	bool l3_device = false; // frames start at the IP header (tun, wireguard ...)
	bool arp = true;        // key ARP frames as flows (false: --no-arp, unparsed)
	bool tcp_health = true; // track retransmissions and round trips (false: --no-tcp-health)
};

class XdpCollector {
      public:
	explicit XdpCollector(const XdpOptions &opts); // opens, configures, loads
	XdpCollector(const XdpCollector &) = delete;
	XdpCollector &operator=(const XdpCollector &) = delete;

	void attach();          // throws XdpBusy / SysError; the interface is unchanged on failure
	void detach() noexcept; // idempotent
	bool attached() const noexcept { return static_cast<bool>(link_); }

	// "xdp-native", "xdp-generic", "xdp-offload"; "" when detached.
	std::string attach_path() const;
	// Auto mode only: why native XDP was not used ("" if it was).
	const std::string &native_refusal() const noexcept { return native_refusal_; }
	bool buff_len() const noexcept { return buff_len_; }

	// CLOCK_REALTIME - CLOCK_MONOTONIC taken once at load: one offset for the
	// whole capture, so a flow's timestamps do not jitter between reads.
	int64_t epoch_offset_ns() const noexcept { return epoch_offset_ns_; }

	int flows_fd() const { return bpf_map__fd(skel_->maps.flows); }
	int stats_fd() const { return bpf_map__fd(skel_->maps.stats); }
	// The two-sided flow table's drains and the lifetime table (flow_drain.hpp).
	FlowDrain &drainer() const { return *drain_; }
	const XdpOptions &options() const noexcept { return opts_; }

      private:
	void linked(int fd, uint32_t flags); // keep the link made with `flags`

	XdpOptions opts_;
	Skeleton<xdp_bpf> skel_;
	bool buff_len_ = false;
	int64_t epoch_offset_ns_ = 0;
	std::unique_ptr<FlowDrain> drain_;
	UniqueFd link_;
	uint32_t link_flags_ = 0;
	std::string native_refusal_;
};

// True if this kernel has bpf_xdp_get_buff_len (and so multi-buffer XDP).
bool xdp_kernel_has_buff_len();

} // namespace pktstat
