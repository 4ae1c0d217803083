#include "map_memory.hpp"

#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "flow_table.hpp" // possible_cpus

namespace pktstat {
namespace {

// Above this a load is announced: creating the table takes seconds.
constexpr uint64_t kAnnounceBytes = 1000ull * 1000 * 1000;
// A limit this high is no limit (cgroup v1 writes "unlimited" as ~2^63).
constexpr uint64_t kNoLimit = 1ull << 62;

uint64_t round8(uint64_t n) {
	return (n + 7) & ~uint64_t(7);
}

uint64_t pow2_at_least(uint64_t n) {
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

NoticeSink g_sink = nullptr;

bool read_u64(const std::string &path, uint64_t &out) {
	std::ifstream in(path);
	std::string s;
	if (!(in >> s))
		return false;
	if (s == "max") {
		out = UINT64_MAX;
		return true;
	}
	try {
		out = std::stoull(s);
	} catch (...) {
		return false;
	}
	return true;
}

struct CgroupMount {
	std::string root, point;
};

// Where the memory controller's hierarchy is mounted: cgroup2 (`v2`) or
// cgroup v1 with the memory controller.
bool memory_mount(bool v2, CgroupMount &out) {
	std::ifstream in("/proc/self/mountinfo");
	std::string line;
	while (std::getline(in, line)) {
		size_t dash = line.find(" - ");
		if (dash == std::string::npos)
			continue;
		std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
		std::string id, parent, dev, root, point, fstype, source, super;
		pre >> id >> parent >> dev >> root >> point;
		post >> fstype >> source >> super;
		if (v2 ? fstype != "cgroup2"
		       : (fstype != "cgroup" || ("," + super + ",").find(",memory,") == std::string::npos))
			continue;
		out = {root, point};
		return true;
	}
	return false;
}

// The least headroom (limit - usage) from `rel` up to the mount's root, and
// the cgroup that sets it.
void headroom(const CgroupMount &m, std::string rel, const char *limit_file, const char *usage_file,
              uint64_t &best, std::string &where) {
	if (m.root != "/" && rel.compare(0, m.root.size(), m.root) == 0)
		rel = rel.substr(m.root.size());
	while (!rel.empty() && rel.back() == '/')
		rel.pop_back();
	for (;;) {
		const std::string dir = m.point + rel;
		uint64_t limit = 0, usage = 0;
		if (read_u64(dir + "/" + limit_file, limit) && limit < kNoLimit &&
		    read_u64(dir + "/" + usage_file, usage)) {
			uint64_t room = limit > usage ? limit - usage : 0;
			if (room < best) {
				best = room;
				where = rel.empty() ? "/" : rel;
			}
		}
		if (rel.empty())
			break;
		rel.resize(rel.rfind('/'));
	}
}

} // namespace

uint64_t map_kernel_bytes(const bpf_map *map) {
	const uint64_t ncpu = static_cast<uint64_t>(possible_cpus());
	const uint64_t entries = bpf_map__max_entries(map);
	const uint64_t key = round8(bpf_map__key_size(map)), value = round8(bpf_map__value_size(map));
	const auto type = bpf_map__type(map);
	const bool percpu = type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	const bool lru = type == BPF_MAP_TYPE_LRU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	switch (type) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH: {
		if (bpf_map__map_flags(map) & BPF_F_NO_PREALLOC)
			return 0; // grows with use: nothing to check ahead
		// As the kernel's htab_map_mem_usage (kernel/bpf/hashtab.c): a
		// 16-byte bucket per power-of-two slot, and every element
		// preallocated: a 48-byte struct htab_elem, the key, and the value
		// inline or (per-CPU) a pointer to one value per possible CPU.
		// Plain hashes keep one spare element per CPU.
		const uint64_t elem = 48 + key + (percpu ? 8 : value);
		const uint64_t n = entries + (!percpu && !lru ? ncpu : 0);
		uint64_t bytes = 16 * pow2_at_least(entries) + 4 * 8 * ncpu + elem * n;
		if (percpu)
			bytes += value * ncpu * n;
		else if (!lru)
			bytes += 8 * ncpu;
		return bytes;
	}
	case BPF_MAP_TYPE_ARRAY:
		return value * entries;
	case BPF_MAP_TYPE_PERCPU_ARRAY:
		return value * ncpu * entries;
	default:
		return 0;
	}
}

uint64_t kernel_memory_available(std::string *source) {
	uint64_t best = UINT64_MAX;
	std::string where;
	{
		std::ifstream in("/proc/meminfo");
		std::string name, unit;
		uint64_t kb = 0;
		while (in >> name >> kb) {
			std::getline(in, unit);
			if (name == "MemAvailable:") {
				best = kb * 1024;
				break;
			}
		}
	}
	std::string memcg;
	for (bool v2 : {false, true}) {
		std::ifstream in("/proc/self/cgroup");
		std::string line, rel;
		while (std::getline(in, line)) { // "hierarchy-id:controllers:path"
			size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
			if (b == std::string::npos)
				continue;
			const std::string ctrl = line.substr(a + 1, b - a - 1);
			if (v2 ? line.compare(0, a, "0") == 0 && ctrl.empty()
			       : ("," + ctrl + ",").find(",memory,") != std::string::npos) {
				rel = line.substr(b + 1);
				break;
			}
		}
		CgroupMount m;
		if (rel.empty() || !memory_mount(v2, m))
			continue;
		headroom(m, rel, v2 ? "memory.max" : "memory.limit_in_bytes",
		         v2 ? "memory.current" : "memory.usage_in_bytes", best, memcg);
	}
	if (source)
		*source = memcg.empty() ? "MemAvailable" : "the memory cgroup limit of " + memcg;
	return best;
}

void check_flow_table(const bpf_object *obj) {
	const bpf_map *flows = bpf_object__find_map_by_name(obj, "flows");
	if (!flows)
		return;
	// Two sides (flow_add.bpf.h): the programs count into one while the
	// engine drains the other.
	const bpf_map *flows1 = bpf_object__find_map_by_name(obj, "flows1");
	const uint64_t need = map_kernel_bytes(flows) + (flows1 ? map_kernel_bytes(flows1) : 0);
	const std::string flag = "--max-entries " + std::to_string(bpf_map__max_entries(flows));
	std::string source;
	const uint64_t have = kernel_memory_available(&source);
	if (need > have)
		throw TableTooLarge(flag + ": the flow table needs " + human_bytes(need) +
		                    " of kernel memory, but only " + human_bytes(have) + " is available (" +
		                    source + "); lower --max-entries");
	if (need >= kAnnounceBytes)
		notice("creating a flow table of " + human_bytes(need) + " (" + flag + ")...");
}

void set_notice_sink(NoticeSink sink) {
	g_sink = sink;
}

void notice(const std::string &line) {
	if (g_sink)
		g_sink(line);
}

std::string human_bytes(uint64_t bytes) {
	char buf[32];
	if (bytes >= 1000ull * 1000 * 1000)
		std::snprintf(buf, sizeof buf, "%.1f GB", bytes / 1e9);
	else
		std::snprintf(buf, sizeof buf, "%.0f MB", bytes / 1e6);
	return buf;
}

} // namespace pktstat
