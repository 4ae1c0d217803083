// sock_scan.hpp - who owns the sockets that exist right now, the way `ss -p`
// finds out: sock_diag (NETLINK_SOCK_DIAG) lists the TCP, UDP and UDP-Lite
// sockets of each network namespace with their cookie, inode and cgroup id;
// /proc/<pid>/fd maps socket inodes to the processes holding them.
//
// Network namespaces are found through /proc/<pid>/ns/net and /run/netns
// (namespaces kept by name) and visited by a short-lived thread that
// setns()es into each (the calling thread, which may itself sit in a test's
// namespace, is never moved).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "flow.h"

namespace pktstat {

struct DiagSocket {
	uint64_t cookie = 0;
	uint32_t inode = 0; // 0: no file (TIME_WAIT, a request, an orphan)
	uint64_t cgroup_id = 0;
	uint64_t netns_cookie = 0;
	uint16_t sport = 0; // host byte order
	uint8_t protocol = 0, state = 0, family = 0;
	bool has_cgroup = false; // the kernel reported INET_DIAG_CGROUP_ID
};

// Every TCP/UDP/UDP-Lite socket (IPv4 and IPv6) of every network namespace
// some process lives in. `netns_seen` receives how many namespaces were read.
std::vector<DiagSocket> diag_all_sockets(size_t *netns_seen = nullptr);

struct SocketHolders {
	std::vector<uint32_t> pids; // distinct TGIDs holding an fd to it
	std::vector<std::string> comms;
};

// socket inode -> processes with an fd on it, for the inodes in `wanted`.
// `processes` receives how many processes were scanned.
std::unordered_map<uint32_t, SocketHolders> socket_holders(const std::unordered_set<uint32_t> &wanted,
                                                           size_t *processes = nullptr);

// The owner of a socket given its holders (one process: it; several: shared,
// pid 0, comm kept if all agree; none: unclaimed).
sock_owner owner_from_holders(const SocketHolders *h);

} // namespace pktstat
