// tc_claims.hpp - what pktstat-bpf processes tell each other, across
// processes and process lifetimes, about legacy tc attachments: files under
// /run/pktstat-bpf (see tc_claims.cpp).
//  - The claim on a clsact qdisc pktstat-bpf made: who holds filters on it,
//    so that the last holder out removes it (and nobody removes a qdisc that
//    anyone else made).
//  - The record of one collector's legacy filters, locked (flock) for as
//    long as the collector lives. A record whose lock is free belongs to a
//    process that died without undoing its attachment (SIGKILL, cgroup.kill
//    of its whole cgroup, an OOM kill): sweep_stale_tc() undoes it. The
//    kernel releases the lock, so this depends on no surviving process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fd.hpp"
#include "tc_attach.hpp"

namespace pktstat {

// The lock every step on the claim files runs under. !ok() when the claim
// directory cannot be made or written (no privilege over /run): then no
// claim or record is kept and each process undoes only its own attachment.
class ClaimLock {
      public:
	ClaimLock();
	bool ok() const noexcept { return static_cast<bool>(fd_); }

      private:
	UniqueFd fd_; // closing it releases the lock
};

// Join the claim on ifindex's qdisc in `ns` (the ClsactQdisc constructor,
// under `lock`): as a holder if we just made the qdisc (`created`) or another
// live pktstat-bpf process holds it. False if we are no holder.
bool join_qdisc_claim(const ClaimLock &lock, const Netns &ns, int ifindex, bool created);

// Process `pid` (or, if it is not running, a dead one) lets go of ifindex's
// qdisc in the calling thread's namespace: removes the qdisc if pktstat-bpf
// made it (the claim, or `created` where no claim could be kept), no other
// pktstat-bpf process holds it, and no filter is left on it. The janitor
// calls it for a collector that died. True if it removed the qdisc.
bool release_clsact(int ifindex, bool created, long pid);

struct LegacyFilterId {
	TcDir dir;
	uint32_t handle, priority, prog_id;
};

// The record of one collector's legacy filters on one interface, written and
// locked on construction (nothing, silently, without a writable claim
// directory), removed on destruction: after the filters are gone.
class LegacyRecord {
      public:
	LegacyRecord(const Netns &ns, int ifindex, const std::vector<LegacyFilterId> &filters);
	LegacyRecord(const LegacyRecord &) = delete;
	LegacyRecord &operator=(const LegacyRecord &) = delete;
	~LegacyRecord();
	const std::string &path() const noexcept { return path_; }

      private:
	std::string path_;
	UniqueFd fd_; // holds the record's lock while we live
};

// Undo what the legacy attachments of pktstat-bpf processes that died left
// in the calling thread's network namespace: their filters (those still
// running the program they attached), then their claim on the clsact qdisc
// (removed if pktstat-bpf made it and no filter is left on it). Records of
// live processes, other namespaces, anyone else's filters and qdiscs are
// left alone. Returns the number of records whose undoing removed anything
// (a record whose filters the janitor already removed is only deleted).
int sweep_stale_tc();

} // namespace pktstat
