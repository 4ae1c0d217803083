#include "flow_drain.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "error.hpp"
#include "flow_table.hpp"

namespace pktstat {
namespace {

bpf_map *need_map(bpf_object *obj, const char *name) {
	bpf_map *m = bpf_object__find_map_by_name(obj, name);
	if (!m)
		throw SysError(std::string("BPF object has no map ") + name, ENOENT);
	return m;
}

void add_stats(dir_stats &a, const dir_stats &b) {
	a.packets += b.packets;
	a.bytes += b.bytes;
	a.unparsed_packets += b.unparsed_packets;
	a.unparsed_bytes += b.unparsed_bytes;
	a.overflow_packets += b.overflow_packets;
	a.overflow_bytes += b.overflow_bytes;
}

// A flow's names so far `a` with a later entry `b` of the same flow: a DNS
// flow takes the last name, adds the counts and keeps the last response's
// code and answer count; otherwise what is known stays and `b` fills gaps.
void merge_name(flow_name &a, const flow_name &b) {
	if (b.kind == FLOW_NAME_DNS) {
		const uint32_t q = a.dns_queries + b.dns_queries, r = a.dns_responses + b.dns_responses;
		const uint8_t rcode = b.dns_responses ? b.dns_rcode : a.dns_rcode;
		const uint16_t answers = b.dns_responses ? b.dns_answers : a.dns_answers;
		a = b;
		a.dns_queries = q;
		a.dns_responses = r;
		a.dns_rcode = rcode;
		a.dns_answers = answers;
		return;
	}
	if (!a.len && b.len) {
		a.kind = b.kind;
		a.len = b.len;
		std::memcpy(a.name, b.name, sizeof(a.name));
	}
	if (!a.alpn_len && b.alpn_len) {
		a.alpn_len = b.alpn_len;
		std::memcpy(a.alpn, b.alpn, sizeof(a.alpn));
	}
	if (!a.quic && b.quic) {
		a.quic = 1;
		a.quic_version = b.quic_version;
	}
	a.tls_more = b.tls_more;
}

std::string key_bytes(const flow_key &k) {
	return std::string(reinterpret_cast<const char *>(&k), sizeof(k));
}

} // namespace

void set_flow_table_size(bpf_object *obj, uint32_t max_entries) {
	for (const char *name : {"flows", "flows1"})
		check_libbpf(bpf_map__set_max_entries(need_map(obj, name), max_entries), "set flow map size");
	if (bpf_map *names = bpf_object__find_map_by_name(obj, "names"))
		check_libbpf(bpf_map__set_max_entries(names, std::min(max_entries, kNamesMaxEntries)),
		             "set names map size");
	if (bpf_map *addrs = bpf_object__find_map_by_name(obj, "dns_addrs"))
		check_libbpf(bpf_map__set_max_entries(addrs, std::min(max_entries, kNamesMaxEntries)),
		             "set dns_addrs map size");
}

FlowDrain::FlowDrain(bpf_object *obj, int64_t ts_offset_ns, bool live, uint64_t start_ns)
    : ts_offset_ns_(ts_offset_ns), live_(live), last_ns_(start_ns), totals_(FLOW_DIR_NR) {
	flows_fd_[0] = bpf_map__fd(need_map(obj, "flows"));
	flows_fd_[1] = bpf_map__fd(need_map(obj, "flows1"));
	stats_fd_ = bpf_map__fd(need_map(obj, "stats"));
	max_entries_ = bpf_map__max_entries(need_map(obj, "flows"));
	sync_fd_ = bpf_map__fd(need_map(obj, "drain_sync"));
	bpf_map *side = need_map(obj, ".data.flow_side");
	size_t size = 0;
	// libbpf 1.1 returns it const; after a skeleton load it is the map's own
	// writable mmap (the skeleton remaps data sections in place).
	side_ = static_cast<volatile uint32_t *>(const_cast<void *>(bpf_map__initial_value(side, &size)));
	if (!side_ || size < sizeof(uint32_t))
		throw SysError("flow_side is not mmapped", EPROTO);
	if (bpf_map *names = bpf_object__find_map_by_name(obj, "names")) {
		names_fd_ = bpf_map__fd(names);
		names_key_size_ = bpf_map__key_size(names);
		name_stats_fd_ = bpf_map__fd(need_map(obj, "name_stats"));
		if (names_key_size_ != sizeof(flow_tuple) && names_key_size_ != sizeof(flow_key))
			throw SysError("names map has an unknown key size", EPROTO);
	}
	if (bpf_map *addrs = bpf_object__find_map_by_name(obj, "dns_addrs"))
		dns_addrs_fd_ = bpf_map__fd(addrs);
	if (live_) {
		// The inner map drain_sync's updates point to (the template's shape).
		int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "drain_sync_in", sizeof(uint32_t),
		                        sizeof(uint32_t), 1, nullptr);
		check_libbpf(fd, "create drain_sync inner map");
		sync_inner_ = UniqueFd(fd);
	}
}

std::vector<dir_stats> FlowDrain::read_side_stats(uint32_t side, bool zero) {
	const int ncpu = possible_cpus();
	std::vector<dir_stats> per_cpu(ncpu), out(FLOW_DIR_NR);
	for (uint32_t d = 0; d < FLOW_DIR_NR; ++d) {
		const uint32_t i = side * FLOW_DIR_NR + d;
		check_libbpf(bpf_map_lookup_elem(stats_fd_, &i, per_cpu.data()), "read counters");
		for (const dir_stats &c : per_cpu)
			add_stats(out[d], c);
		if (zero) {
			std::vector<dir_stats> zeros(ncpu);
			check_libbpf(bpf_map_update_elem(stats_fd_, &i, zeros.data(), BPF_ANY),
			             "zero counters");
		}
	}
	return out;
}

// The names map's entries, moved out: the keys first (an iteration that
// deletes as it goes would restart), then each taken with
// lookup_and_delete, so a name written meanwhile stays for the next drain.
void FlowDrain::take_names(Interval &iv) {
	if (names_fd_ < 0)
		return;
	std::vector<uint8_t> keys;
	std::vector<uint8_t> key(names_key_size_);
	const void *prev = nullptr;
	while (bpf_map_get_next_key(names_fd_, prev, key.data()) == 0) {
		keys.insert(keys.end(), key.begin(), key.end());
		prev = keys.data() + keys.size() - names_key_size_;
	}
	for (size_t at = 0; at < keys.size(); at += names_key_size_) {
		name_record r{};
		if (bpf_map_lookup_and_delete_elem(names_fd_, keys.data() + at, &r.name) != 0)
			continue; // (gone meanwhile: cannot happen, only drains delete)
		std::memcpy(&r.key, keys.data() + at, names_key_size_); // a tuple: no owner
		iv.names.push_back(r);
		auto [it, fresh] = names_.try_emplace(key_bytes(r.key), r.name);
		if (!fresh)
			merge_name(it->second, r.name);
	}
	const int ncpu = possible_cpus();
	std::vector<name_stats> per_cpu(ncpu);
	const uint32_t zero = 0;
	check_libbpf(bpf_map_lookup_elem(name_stats_fd_, &zero, per_cpu.data()), "read name counters");
	for (const name_stats &c : per_cpu) {
		iv.names_written += c.written;
		iv.names_full += c.full;
		iv.dns_addrs += c.dns_addrs;
		iv.dns_addrs_full += c.dns_addrs_full;
	}
	names_full_ = iv.names_full;
	dns_addrs_full_ = iv.dns_addrs_full;
}

// The dns_addrs map's entries moved into the cache (as take_names: the keys
// first, then each taken with lookup_and_delete), on the flows' clock.
void FlowDrain::take_dns_addrs() {
	if (dns_addrs_fd_ < 0)
		return;
	std::vector<dns_addr_key> keys;
	dns_addr_key key{};
	const void *prev = nullptr;
	while (bpf_map_get_next_key(dns_addrs_fd_, prev, &key) == 0) {
		keys.push_back(key);
		prev = &keys.back();
	}
	for (const dns_addr_key &k : keys) {
		dns_addr a{};
		if (bpf_map_lookup_and_delete_elem(dns_addrs_fd_, &k, &a) != 0)
			continue;
		a.seen_ns = static_cast<uint64_t>(static_cast<int64_t>(a.seen_ns) + ts_offset_ns_);
		data_ns_ = std::max<uint64_t>(data_ns_, a.seen_ns);
		dns_.add(k, a);
	}
}

// Live clocks are per-CPU ticks (tick_clock.bpf.h): a flow's first packet
// may be stamped up to a tick before the answer another CPU stamped.
constexpr uint64_t kDnsSlackNs = 20000000;

// The interval's flows not yet named by DNS: named from the cache
// (dns_cache.hpp), which then forgets what has expired by the latest time
// seen (on the data's clock, so a replay's answers expire in capture time).
void FlowDrain::name_by_dns(const std::vector<interval_record> &recs) {
	for (const interval_record &r : recs)
		data_ns_ = std::max<uint64_t>(data_ns_, r.rec.value.last_seen_ns);
	if (dns_.size())
		for (const interval_record &r : recs) {
			std::string k = key_bytes(r.rec.key);
			if (dns_named_.count(k))
				continue;
			if (const dns_addr *a =
			        dns_.find(r.rec.key.tuple, r.flow_first_seen_ns, live_ ? kDnsSlackNs : 0))
				dns_named_.emplace(std::move(k), *a);
		}
	dns_.expire(data_ns_);
}

Interval FlowDrain::drain(uint64_t now_ns, bool timeouts, bool end, bool use_batch,
                          const std::vector<dir_stats> *extra) {
	std::lock_guard<std::mutex> lock(mu_);
	using clock = std::chrono::steady_clock;
	auto ns_since = [](clock::time_point t) {
		return static_cast<uint64_t>(
		    std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t).count());
	};
	const auto t0 = clock::now();
	uint32_t old = 0;
	if (live_) {
		old = *side_ & 1;
		*side_ = old ^ 1;
		// Returns after an RCU grace period: every program run that read
		// the old side has finished, and every later one sees the new side.
		const uint32_t zero = 0;
		const int inner = sync_inner_.get();
		check_libbpf(bpf_map_update_elem(sync_fd_, &zero, &inner, BPF_ANY),
		             "wait for the programs (drain_sync)");
	}
	Interval iv;
	iv.wait_ns = ns_since(t0);
	for (const std::string &k : names_ended_) { // ended by the previous drain: shown once, with their end
		names_.erase(k);
		dns_named_.erase(k);
	}
	names_ended_.clear();
	const auto t1 = clock::now();
	iv.start_ns = last_ns_;
	iv.end_ns = now_ns;
	last_ns_ = now_ns;
	scratch_ = take_flows(flows_fd_[old], ts_offset_ns_, use_batch, &scratch_);
	const std::vector<flow_record> &recs = scratch_;
	iv.stats = read_side_stats(old, true);
	take_names(iv);
	take_dns_addrs();
	if (extra)
		for (uint32_t d = 0; d < FLOW_DIR_NR && d < extra->size(); ++d)
			add_stats(iv.stats[d], (*extra)[d]);
	for (uint32_t d = 0; d < FLOW_DIR_NR; ++d)
		add_stats(totals_[d], iv.stats[d]);
	iv.read_ns = ns_since(t1);
	const auto t2 = clock::now();
	table_.update(recs, iv.records, iv.ended);
	name_by_dns(iv.records);
	if (timeouts)
		table_.expire(now_ns, iv.ended);
	if (end)
		table_.retire_all(FLOW_END_END, iv.ended);
	if (!names_.empty() || !dns_named_.empty())
		for (const ended_record &e : iv.ended)
			if (e.reason != FLOW_END_ACTIVE)
				names_ended_.push_back(key_bytes(e.rec.key));
	iv.totals = totals_;
	iv.live_flows = table_.size();
	iv.evicted_flows = table_.evicted();
	++drains_;
	if (after_drain_)
		after_drain_();
	iv.fold_ns = ns_since(t2);
	return iv;
}

std::vector<dir_stats> FlowDrain::totals(bool peek) {
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<dir_stats> out = totals_;
	if (peek) {
		const std::vector<dir_stats> now = read_side_stats(live_ ? (*side_ & 1) : 0, false);
		for (uint32_t d = 0; d < FLOW_DIR_NR; ++d)
			add_stats(out[d], now[d]);
	}
	return out;
}

std::vector<flow_record> FlowDrain::flows() {
	std::lock_guard<std::mutex> lock(mu_);
	// The room a read of the kernel map would take, as read_flows always
	// did, so a steady refresh reuses the spare buffer.
	std::vector<flow_record> out =
	    take_spare_records(std::max<size_t>(table_.size(), std::min<uint32_t>(max_entries_, 1u << 22)));
	table_.live(out);
	return out;
}

std::vector<name_record> FlowDrain::names() {
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<name_record> out;
	out.reserve(names_.size());
	for (const auto &[k, n] : names_) {
		name_record r{};
		std::memcpy(&r.key, k.data(), sizeof(r.key));
		r.name = n;
		out.push_back(r);
	}
	return out;
}

uint64_t FlowDrain::names_full() {
	std::lock_guard<std::mutex> lock(mu_);
	return names_full_;
}

std::vector<dns_name_record> FlowDrain::dns_names() {
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<dns_name_record> out;
	out.reserve(dns_named_.size());
	for (const auto &[k, a] : dns_named_) {
		dns_name_record r{};
		std::memcpy(&r.key, k.data(), sizeof(r.key));
		r.answer = a;
		out.push_back(r);
	}
	return out;
}

uint64_t FlowDrain::dns_addrs_full() {
	std::lock_guard<std::mutex> lock(mu_);
	return dns_addrs_full_;
}

void FlowDrain::set_limits(const FlowLimits &l) {
	std::lock_guard<std::mutex> lock(mu_);
	table_.set_limits(l);
}

FlowLimits FlowDrain::limits() {
	std::lock_guard<std::mutex> lock(mu_);
	return table_.limits();
}

uint64_t FlowDrain::drains() {
	std::lock_guard<std::mutex> lock(mu_);
	return drains_;
}

void FlowDrain::clear() {
	std::lock_guard<std::mutex> lock(mu_);
	for (int side = 0; side < 2; ++side) {
		scratch_ = take_flows(flows_fd_[side], 0, true, &scratch_);
		(void)read_side_stats(side, true);
	}
	table_.clear();
	totals_.assign(FLOW_DIR_NR, dir_stats{});
	if (names_fd_ >= 0) {
		Interval gone;
		take_names(gone);
	}
	take_dns_addrs();
	dns_.clear();
	dns_named_.clear();
	data_ns_ = 0;
	names_.clear();
	names_ended_.clear();
}

} // namespace pktstat
