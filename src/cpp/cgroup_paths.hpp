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

struct ring_buffer;

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

// Cgroup ids -> paths for a collector whose BPF side reports new cgroups as
// cgroup_mkdir records on a ring buffer: a bounded cache fed by those
// records and by scans of the subtree `rel` of the mount `mount_root` (whose
// root in the hierarchy is `hier_root`). Records outside the subtree are
// dropped.
class CgroupResolver {
      public:
	CgroupResolver(std::string mount_root, std::string rel, std::string hier_root, size_t capacity);
	~CgroupResolver();
	CgroupResolver(const CgroupResolver &) = delete;
	CgroupResolver &operator=(const CgroupResolver &) = delete;

	void listen(int ringbuf_fd); // start taking records from the ring buffer (throws SysError)
	void take_events();          // the records pending
	// The pending records, then the subtree; `ids` (if given) receives every
	// id of the subtree. Returns the number of cgroups seen.
	size_t scan(std::unordered_set<uint64_t> *ids = nullptr);
	// Paths of `ids` ("" where unknown; id 0 is left out), after taking in the
	// pending records and, if some id is still unknown, one rescan.
	std::unordered_map<uint64_t, std::string> resolve(const std::vector<uint64_t> &ids);

      private:
	static int on_event(void *ctx, void *data, size_t size);
	bool under_target(const std::string &path) const;

	std::string mount_root_, rel_, hier_root_;
	CgroupPathCache paths_;
	ring_buffer *events_ = nullptr;
};

} // namespace pktstat
