// dns_cache.hpp - names for flows from the DNS answers seen before them.
//
// The kernel puts each A and AAAA answer of a DNS response in its
// `dns_addrs` map (l7_names.bpf.h): address -> the question's name, the
// record's TTL and when it was seen. Each drain moves those entries here
// (FlowDrain::take_dns_addrs), and then names every flow of the interval
// not named yet whose remote address (its destination, else its source)
// has an answer seen before the flow's first packet and still within its
// TTL at that packet. A flow keeps the name it was given for its life (the
// answer may expire or be replaced meanwhile). The cache holds at most
// kDnsCacheMax addresses; an entry leaves when its TTL has run out (on the
// data's clock: the latest time a drain saw) or, when the cache is full,
// the one that expires first makes room.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "flow.h"

namespace pktstat {

constexpr size_t kDnsCacheMax = 65536;

class DnsCache {
      public:
	// An answer (seen_ns on the flows' clock). A later answer for the same
	// address and the same question extends the earlier one to its expiry
	// (the kernel does the same within an interval); for another question
	// it replaces it.
	void add(const dns_addr_key &k, const dns_addr &a);
	// The answer naming a flow of tuple `t` first seen at `first_ns`: for
	// its destination address, else its source; seen at most `slack_ns`
	// after first_ns (live clocks are per-CPU ticks) and not expired at
	// first_ns. Null: none.
	const dns_addr *find(const flow_tuple &t, uint64_t first_ns, uint64_t slack_ns) const;
	// Forget answers expired at `now_ns`.
	void expire(uint64_t now_ns);
	size_t size() const { return by_addr_.size(); }
	void clear();

      private:
	struct Entry {
		dns_addr a;
		uint64_t expiry_ns;
		std::multimap<uint64_t, std::string>::iterator at; // in by_expiry_
	};
	const dns_addr *find_addr(const uint8_t *addr, uint8_t ipver, uint64_t first_ns,
	                          uint64_t slack_ns) const;
	std::unordered_map<std::string, Entry> by_addr_; // by dns_addr_key bytes
	std::multimap<uint64_t, std::string> by_expiry_;
};

} // namespace pktstat
