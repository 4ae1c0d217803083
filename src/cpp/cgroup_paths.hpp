// cgroup_paths.hpp - cgroup v2 ids and paths.
//
// A cgroup's id is its kernfs node id: what bpf_skb_cgroup_id() and
// bpf_get_current_cgroup_id() return, and what name_to_handle_at() gives for
// its directory. Paths are relative to the cgroup v2 mount ("/" is the root,
// "/system.slice/ssh.service" a child), as /proc/<pid>/cgroup shows them.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace pktstat {

// The cgroup id of a directory on a cgroup v2 mount (throws SysError).
uint64_t cgroup_id_of(const std::string &dir);

// A bounded id -> path cache, least recently used entries evicted first.
class CgroupPathCache {
public:
	explicit CgroupPathCache(size_t capacity) : capacity_(capacity ? capacity : 1) {}
	void put(uint64_t id, std::string path);
	std::optional<std::string> get(uint64_t id); // refreshes the entry
	size_t size() const noexcept { return index_.size(); }
	size_t capacity() const noexcept { return capacity_; }
	uint64_t evictions() const noexcept { return evictions_; }

private:
	using Entry = std::pair<uint64_t, std::string>;
	size_t capacity_;
	std::list<Entry> lru_; // front: most recent
	std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
	uint64_t evictions_ = 0;
};

// Walk the cgroup v2 tree from `mount_root` + `rel` (rel "/" = the whole
// hierarchy): every directory's id and path (relative to the mount) goes to
// `cache`; `ids`, if given, receives every id of the subtree. Directories that
// vanish during the walk are skipped. Returns the number of cgroups seen.
// A cgroup_mkdir ring-buffer record (struct cgroup_event, `size` bytes) ->
// its id and its path relative to a mount whose root in the hierarchy is
// `hier_root`; false for a short record or a cgroup outside the mount.
bool cgroup_event_path(const void *data, size_t size, const std::string &hier_root, uint64_t &id,
                       std::string &path);

size_t scan_cgroup_tree(const std::string &mount_root, const std::string &rel, CgroupPathCache &cache,
                        std::unordered_set<uint64_t> *ids = nullptr);

} // namespace pktstat
