#include "dns_cache.hpp"

#include <cstring>

namespace pktstat {
namespace {

std::string addr_key(const uint8_t *addr, uint8_t ipver) {
	dns_addr_key k{};
	std::memcpy(k.addr, addr, sizeof(k.addr));
	k.ipver = ipver;
	return std::string(reinterpret_cast<const char *>(&k), sizeof(k));
}

// A record's TTL in ns (RFC 2181 8: a TTL with its top bit set is 0).
uint64_t ttl_ns(uint32_t ttl) {
	return ttl & 0x80000000u ? 0 : uint64_t{ttl} * 1000000000ull;
}

} // namespace

void DnsCache::add(const dns_addr_key &k, const dns_addr &a) {
	const std::string key = addr_key(k.addr, k.ipver);
	const uint64_t expiry = a.seen_ns + ttl_ns(a.ttl);
	auto it = by_addr_.find(key);
	if (it != by_addr_.end()) {
		Entry &e = it->second;
		if (e.a.len == a.len && e.a.seen_ns <= a.seen_ns &&
		    std::memcmp(e.a.name, a.name, a.len) == 0) {
			// the same question again: the first time stays (the flows
			// since then are its), the later expiry wins
			if (expiry > e.expiry_ns) {
				by_expiry_.erase(e.at);
				e.expiry_ns = expiry;
				e.at = by_expiry_.emplace(expiry, key);
			}
			return;
		}
		by_expiry_.erase(e.at);
		by_addr_.erase(it);
	} else if (by_addr_.size() >= kDnsCacheMax) {
		auto first = by_expiry_.begin(); // full: the answer that expires first goes
		by_addr_.erase(first->second);
		by_expiry_.erase(first);
	}
	auto at = by_expiry_.emplace(expiry, key);
	by_addr_.emplace(key, Entry{a, expiry, at});
}

const dns_addr *DnsCache::find_addr(const uint8_t *addr, uint8_t ipver, uint64_t first_ns,
                                    uint64_t slack_ns) const {
	auto it = by_addr_.find(addr_key(addr, ipver));
	if (it == by_addr_.end())
		return nullptr;
	const Entry &e = it->second;
	if (e.a.seen_ns > first_ns + slack_ns || first_ns >= e.expiry_ns)
		return nullptr;
	return &e.a;
}

const dns_addr *DnsCache::find(const flow_tuple &t, uint64_t first_ns, uint64_t slack_ns) const {
	if (by_addr_.empty() || (t.ipver != 4 && t.ipver != 6))
		return nullptr;
	if (const dns_addr *a = find_addr(t.daddr, t.ipver, first_ns, slack_ns))
		return a;
	return find_addr(t.saddr, t.ipver, first_ns, slack_ns);
}

void DnsCache::expire(uint64_t now_ns) {
	while (!by_expiry_.empty() && by_expiry_.begin()->first <= now_ns) {
		by_addr_.erase(by_expiry_.begin()->second);
		by_expiry_.erase(by_expiry_.begin());
	}
}

void DnsCache::clear() {
	by_addr_.clear();
	by_expiry_.clear();
}

} // namespace pktstat
