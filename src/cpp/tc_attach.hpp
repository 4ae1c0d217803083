// tc_attach.hpp - attaching a SEC("tc") program to an interface.
//
// Two paths, probed in this order by TcAttachMode::Auto:
//  - TCX (kernel >= 6.6): a BPF link made with bpf_link_create(attach type
//    BPF_TCX_INGRESS/EGRESS). The link is an fd: closing it, or the process
//    dying, detaches the program.
//  - legacy clsact + cls_bpf (any kernel): a clsact qdisc (created only if
//    missing, and then removed again only if we made it and no filter is left
//    on it) and a direct-action filter. Filters outlive the process: if it
//    dies, the Python side's janitor removes them (_janitor.py), and, should
//    the janitor die with it, the next pktstat-bpf run does (the record of
//    the attachment, tc_claims.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "fd.hpp"

namespace pktstat {

enum class TcAttachMode { Auto, Tcx, Legacy };
enum class TcDir { Ingress, Egress };

// Linux uapi 6.6 constants, missing from the 6.1 headers we build against.
inline constexpr int kBpfTcxIngress = 46;
inline constexpr int kBpfTcxEgress = 47;
inline constexpr uint32_t kBpfFBefore = 1U << 3;

// The network namespace an attachment was made in (the calling thread's at
// construction). An ifindex means nothing outside it, so the netlink calls
// that undo a legacy attachment run there, also when the thread that stops
// the collector has since moved to another namespace: otherwise they would
// remove whatever sits under the same ifindex where that thread is.
class Netns {
      public:
	Netns();
	// Run f with the calling thread in this namespace, switching there and
	// back only if it is elsewhere (which needs CAP_SYS_ADMIN). False, and f
	// not run, if the switch failed.
	bool run_in(const std::function<void()> &f) const noexcept;
	uint64_t dev() const noexcept { return dev_; } // the namespace's nsfs inode: names it
	uint64_t ino() const noexcept { return ino_; }

      private:
	UniqueFd fd_;
	uint64_t dev_ = 0, ino_ = 0;
};

// The clsact qdisc as we found it: `created` means we made it. A qdisc that
// pktstat-bpf made is removed when the last filter of any pktstat-bpf process
// goes, if no one else's filter is on it (the claim file, see tc_claims.cpp);
// one made by anyone else is never removed. Collectors of one process on one
// interface share one owner (acquire()).
class ClsactQdisc {
      public:
	explicit ClsactQdisc(int ifindex); // creates it if missing
	ClsactQdisc(const ClsactQdisc &) = delete;
	ClsactQdisc &operator=(const ClsactQdisc &) = delete;
	~ClsactQdisc();
	// The owner of ifindex's qdisc in the calling thread's namespace: the one
	// another collector of this process holds, or a new one.
	static std::shared_ptr<ClsactQdisc> acquire(int ifindex);
	bool created() const noexcept { return created_; }
	int ifindex() const noexcept { return ifindex_; }
	const Netns &netns() const noexcept { return netns_; }

      private:
	int ifindex_;
	Netns netns_;
	bool created_ = false;
	bool claimed_ = false; // we are a holder in the claim file
};

// A legacy cls_bpf filter we added; removed on destruction.
class LegacyTcFilter {
      public:
	LegacyTcFilter(std::shared_ptr<ClsactQdisc> qdisc, TcDir dir, int prog_fd);
	LegacyTcFilter(const LegacyTcFilter &) = delete;
	LegacyTcFilter &operator=(const LegacyTcFilter &) = delete;
	~LegacyTcFilter();
	uint32_t handle() const noexcept { return handle_; }
	uint32_t priority() const noexcept { return priority_; }
	uint32_t prog_id() const noexcept { return prog_id_; }

      private:
	std::shared_ptr<ClsactQdisc> qdisc_; // destroyed after the filter
	TcDir dir_;
	uint32_t handle_ = 0, priority_ = 0, prog_id_ = 0;
};

struct TcxLink {
	UniqueFd fd;
};

// What attach_tc() returns: the owner of whichever attachment was made.
struct TcAttachment {
	std::variant<TcxLink, std::unique_ptr<LegacyTcFilter>> owner;
	bool is_tcx() const noexcept { return std::holds_alternative<TcxLink>(owner); }
	std::string describe() const;
};

// Attach `prog_fd` to ifindex in direction `dir`. For the legacy path the
// qdisc owner is shared by the ingress and egress filters of one collector.
TcAttachment attach_tc(int prog_fd, int ifindex, TcDir dir, TcAttachMode mode,
                       std::shared_ptr<ClsactQdisc> &qdisc);

// True if any filter is attached to the clsact qdisc of ifindex.
bool clsact_has_filters(int ifindex);

// Remove a legacy filter left by a process that died, if it still runs prog_id.
// Used by the janitor; returns true if it removed something.
bool remove_stale_filter(int ifindex, TcDir dir, uint32_t handle, uint32_t priority, uint32_t prog_id);
// Remove ifindex's clsact qdisc, whatever is on it (see release_clsact in
// tc_claims.hpp for when pktstat-bpf may).
void destroy_clsact(int ifindex);

} // namespace pktstat
