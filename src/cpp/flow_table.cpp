#include "flow_table.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "error.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

constexpr uint32_t round8(uint32_t n) {
	return (n + 7) & ~7U;
}

// Fold the values of one key (one per CPU, or just one) into a record.
void fold_value(const char *vals, const MapShape &s, int ncpu, int64_t off, flow_value &out) {
	out = flow_value{};
	const int n = s.percpu ? ncpu : 1;
	const uint32_t stride = s.percpu ? round8(s.value_size) : s.value_size;
	bool any = false;
	for (int c = 0; c < n; ++c) {
		flow_value v;
		std::memcpy(&v, vals + static_cast<size_t>(c) * stride, sizeof(v));
		if (!v.packets) {
			add_health(out.health, v.health);
			continue;
		}
		out.packets += v.packets;
		out.bytes += v.bytes;
		add_tcp_counts(out, v);
		if (!any || v.first_seen_ns < out.first_seen_ns)
			out.first_seen_ns = v.first_seen_ns;
		if (!any || v.last_seen_ns > out.last_seen_ns)
			out.last_seen_ns = v.last_seen_ns;
		any = true;
	}
	if (any) {
		out.first_seen_ns += off;
		out.last_seen_ns += off;
	}
}

void fill_key(const char *k, const MapShape &s, flow_key &out) {
	out = flow_key{};
	std::memcpy(&out, k, std::min<size_t>(s.key_size, sizeof(out)));
}

// Never freed: a capsule may be released after static destructors ran.
struct Spare {
	std::mutex mu;
	std::vector<flow_record> records; // guarded by mu
};
Spare &spare() {
	static Spare *s = new Spare;
	return *s;
}

} // namespace

std::vector<flow_record> take_spare_records(std::size_t room) {
	std::vector<flow_record> v;
	{
		Spare &sp = spare();
		std::lock_guard<std::mutex> lock(sp.mu);
		if (sp.records.capacity() >= room && sp.records.capacity() <= 2 * room)
			v.swap(sp.records);
	}
	v.clear();
	v.reserve(room);
	return v;
}

void release_records(std::vector<flow_record> &&v) noexcept {
	std::vector<flow_record> drop; // freed outside the lock
	Spare &sp = spare();
	std::lock_guard<std::mutex> lock(sp.mu);
	if (v.capacity() > sp.records.capacity()) {
		drop.swap(sp.records);
		sp.records.swap(v);
	} else {
		drop.swap(v);
	}
}

void drop_spare_records() noexcept {
	std::vector<flow_record> drop;
	Spare &sp = spare();
	std::lock_guard<std::mutex> lock(sp.mu);
	drop.swap(sp.records);
}

int possible_cpus() {
	static const int n = [] {
		int c = libbpf_num_possible_cpus();
		if (c <= 0)
			throw SysError("libbpf_num_possible_cpus", c ? -c : EINVAL);
		return c;
	}();
	return n;
}

MapShape map_shape(int fd) {
	bpf_map_info info{};
	uint32_t len = sizeof(info);
	check_libbpf(bpf_obj_get_info_by_fd(fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
	MapShape s;
	s.key_size = info.key_size;
	s.value_size = info.value_size;
	s.max_entries = info.max_entries;
	s.percpu = info.type == BPF_MAP_TYPE_PERCPU_HASH || info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
	           info.type == BPF_MAP_TYPE_PERCPU_ARRAY;
	if ((s.key_size != sizeof(flow_tuple) && s.key_size != sizeof(flow_key)) ||
	    s.value_size != sizeof(flow_value))
		throw SysError("flow map has an unexpected key/value size", EPROTO);
	return s;
}

namespace {
// Fallback of take: every key first, then lookup + delete each (deleting
// while walking get_next_key could restart the walk).
std::vector<flow_record> take_by_keys(int fd, const MapShape &s, int ncpu, size_t vstride, int64_t off,
                                      std::vector<flow_record> out) {
	std::vector<char> keys, next(s.key_size), vals(vstride);
	const char *prev = nullptr;
	for (;;) {
		int rc = bpf_map_get_next_key(fd, prev, next.data());
		if (rc == -ENOENT)
			break;
		check_libbpf(rc, "bpf_map_get_next_key");
		keys.insert(keys.end(), next.begin(), next.end());
		prev = keys.data() + keys.size() - s.key_size;
	}
	for (size_t k = 0; k < keys.size(); k += s.key_size) {
		const char *key = keys.data() + k;
		int rc = bpf_map_lookup_elem(fd, key, vals.data());
		if (rc == -ENOENT)
			continue;
		check_libbpf(rc, "bpf_map_lookup_elem");
		rc = bpf_map_delete_elem(fd, key);
		if (rc != -ENOENT)
			check_libbpf(rc, "bpf_map_delete_elem");
		flow_record r;
		fill_key(key, s, r.key);
		fold_value(vals.data(), s, ncpu, off, r.value);
		out.push_back(r);
	}
	return out;
}
} // namespace

std::vector<flow_record> take_flows(int fd, int64_t off, bool use_batch, std::vector<flow_record> *into) {
	return read_flows_impl(fd, off, use_batch, true, into);
}

std::vector<flow_record> read_flows(int fd, int64_t off, bool use_batch) {
	return read_flows_impl(fd, off, use_batch, false);
}

std::vector<flow_record> read_flows_impl(int fd, int64_t off, bool use_batch, bool take,
                                         std::vector<flow_record> *into) {
	const MapShape s = map_shape(fd);
	const int ncpu = possible_cpus();
	const size_t vstride = s.percpu ? static_cast<size_t>(round8(s.value_size)) * ncpu : s.value_size;
	// Room for a full map up front: growing by doubling would copy the records
	// read so far and fault in fresh pages each time (a sixth of the read at 1M
	// flows). Pages past the flows read are never touched, so they cost address
	// space, not memory; capped at 4M flows.
	std::vector<flow_record> out;
	if (into) {
		out.swap(*into);
		out.clear();
	} else {
		out = take_spare_records(std::min<uint32_t>(s.max_entries, 1u << 22));
	}

	if (use_batch && forced_missing("map_batch"))
		use_batch = false; // tests: a kernel without batch ops
	if (use_batch) {
		uint32_t chunk = std::clamp<uint32_t>(s.max_entries, 256, 8192);
		std::vector<char> keys, vals;
		uint64_t token_in = 0, token_out = 0; // hash maps use a 4-byte bucket cursor
		bool first = true;
		for (;;) {
			keys.resize(static_cast<size_t>(chunk) * s.key_size);
			vals.resize(static_cast<size_t>(chunk) * vstride);
			uint32_t count = chunk;
			LIBBPF_OPTS(bpf_map_batch_opts, opts);
			int rc = take ? bpf_map_lookup_and_delete_batch(fd, first ? nullptr : &token_in,
			                                                &token_out, keys.data(), vals.data(),
			                                                &count, &opts)
			              : bpf_map_lookup_batch(fd, first ? nullptr : &token_in, &token_out,
			                                     keys.data(), vals.data(), &count, &opts);
			int err = rc < 0 ? -rc : 0;
			if (err && err != ENOENT) {
				if (err == ENOSPC && chunk < (1u << 24)) { // a bucket larger than the buffer
					chunk *= 2;
					continue;
				}
				if (first &&
				    (err == EINVAL || err == EOPNOTSUPP || err == 524 /* ENOTSUPP */))
					return read_flows_impl(fd, off, false, take,
					                       &out); // kernel without batch ops
				throw SysError(
				    take ? "bpf_map_lookup_and_delete_batch" : "bpf_map_lookup_batch", err);
			}
			for (uint32_t i = 0; i < count; ++i) {
				// Built in cache, then written once to the (cold) output.
				flow_record r;
				fill_key(keys.data() + static_cast<size_t>(i) * s.key_size, s, r.key);
				fold_value(vals.data() + i * vstride, s, ncpu, off, r.value);
				out.push_back(r);
			}
			if (err == ENOENT)
				break;
			token_in = token_out;
			first = false;
		}
		return out;
	}

	if (take)
		return take_by_keys(fd, s, ncpu, vstride, off, std::move(out));
	std::vector<char> key(s.key_size), next(s.key_size), vals(vstride);
	bool have = false;
	for (;;) {
		int rc = bpf_map_get_next_key(fd, have ? key.data() : nullptr, next.data());
		if (rc == -ENOENT)
			break;
		check_libbpf(rc, "bpf_map_get_next_key");
		key.swap(next);
		have = true;
		rc = bpf_map_lookup_elem(fd, key.data(), vals.data());
		if (rc == -ENOENT)
			continue; // deleted meanwhile
		check_libbpf(rc, "bpf_map_lookup_elem");
		flow_record r;
		fill_key(key.data(), s, r.key);
		fold_value(vals.data(), s, ncpu, off, r.value);
		out.push_back(r);
	}
	return out;
}

void empty_map(int fd) {
	bpf_map_info info{};
	uint32_t len = sizeof(info);
	check_libbpf(bpf_obj_get_info_by_fd(fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
	std::vector<char> key(info.key_size);
	// Always the first key: each one found is deleted before the next look.
	while (bpf_map_get_next_key(fd, nullptr, key.data()) == 0)
		check_libbpf(bpf_map_delete_elem(fd, key.data()), "bpf_map_delete_elem");
}

uint64_t count_entries(int fd) {
	const MapShape s = map_shape(fd);
	std::vector<char> key(s.key_size), next(s.key_size);
	uint64_t n = 0;
	bool have = false;
	while (bpf_map_get_next_key(fd, have ? key.data() : nullptr, next.data()) == 0) {
		key.swap(next);
		have = true;
		++n;
	}
	return n;
}

std::vector<dir_stats> read_stats(int fd) {
	const int ncpu = possible_cpus();
	std::vector<dir_stats> per_cpu(ncpu);
	std::vector<dir_stats> out(FLOW_DIR_NR);
	for (uint32_t d = 0; d < FLOW_DIR_NR; ++d) {
		check_libbpf(bpf_map_lookup_elem(fd, &d, per_cpu.data()), "read counters");
		for (const dir_stats &c : per_cpu) {
			out[d].packets += c.packets;
			out[d].bytes += c.bytes;
			out[d].unparsed_packets += c.unparsed_packets;
			out[d].unparsed_bytes += c.unparsed_bytes;
			out[d].overflow_packets += c.overflow_packets;
			out[d].overflow_bytes += c.overflow_bytes;
		}
	}
	return out;
}

uint64_t epoch_now_ns(int64_t offset) {
	timespec m;
	clock_gettime(CLOCK_MONOTONIC, &m);
	return static_cast<uint64_t>(static_cast<int64_t>(m.tv_sec) * 1000000000LL + m.tv_nsec + offset);
}

int64_t monotonic_to_epoch_offset_ns() {
	// Bracket one CLOCK_REALTIME read between two CLOCK_MONOTONIC reads.
	timespec m1, r, m2;
	clock_gettime(CLOCK_MONOTONIC, &m1);
	clock_gettime(CLOCK_REALTIME, &r);
	clock_gettime(CLOCK_MONOTONIC, &m2);
	auto ns = [](const timespec &t) { return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec; };
	return ns(r) - (ns(m1) + ns(m2)) / 2;
}

} // namespace pktstat
