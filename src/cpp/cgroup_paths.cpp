#include "cgroup_paths.hpp"

#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "error.hpp"
#include "flow.h"
#include "fd.hpp"

namespace pktstat {
namespace {

struct CgroupHandle {
	unsigned int handle_bytes;
	int handle_type;
	uint64_t id;
};

// The id of `name` relative to `dirfd` (AT_FDCWD for a full path); 0 if it
// cannot be read (then errno says why).
uint64_t id_at(int dirfd, const char *name) {
	CgroupHandle h{};
	h.handle_bytes = sizeof(h.id);
	int mount_id = 0;
	if (::name_to_handle_at(dirfd, name, reinterpret_cast<struct file_handle *>(&h), &mount_id, 0) == 0 &&
	    h.handle_bytes == sizeof(h.id))
		return h.id;
	// Kernels or filesystems without handles: the inode number is the id on 64-bit.
	struct stat st {};
	if (::fstatat(dirfd, name, &st, 0) == 0)
		return st.st_ino;
	return 0;
}

} // namespace

bool cgroup_event_path(const void *data, size_t size, const std::string &hier_root, uint64_t &id,
                       std::string &path) {
	const auto *e = static_cast<const cgroup_event *>(data);
	const size_t head = offsetof(cgroup_event, path);
	if (size <= head || e->len == 0)
		return false;
	size_t n = std::min<size_t>({e->len, size - head, sizeof(e->path)});
	path.assign(e->path, strnlen(e->path, n));
	if (hier_root != "/") { // hierarchy path -> path relative to the mount
		if (path.compare(0, hier_root.size(), hier_root) != 0 ||
		    (path.size() > hier_root.size() && path[hier_root.size()] != '/'))
			return false; // outside the mounted part
		path = path.size() == hier_root.size() ? "/" : path.substr(hier_root.size());
	}
	id = e->id;
	return true;
}

uint64_t cgroup_id_of(const std::string &dir) {
	uint64_t id = id_at(AT_FDCWD, dir.c_str());
	if (!id)
		throw SysError("cgroup id of " + dir, errno ? errno : ENOENT);
	return id;
}

void CgroupPathCache::put(uint64_t id, std::string path) {
	auto it = index_.find(id);
	if (it != index_.end()) {
		it->second->second = std::move(path);
		lru_.splice(lru_.begin(), lru_, it->second);
		return;
	}
	lru_.emplace_front(id, std::move(path));
	index_[id] = lru_.begin();
	while (index_.size() > capacity_) {
		index_.erase(lru_.back().first);
		lru_.pop_back();
		++evictions_;
	}
}

std::optional<std::string> CgroupPathCache::get(uint64_t id) {
	auto it = index_.find(id);
	if (it == index_.end())
		return std::nullopt;
	lru_.splice(lru_.begin(), lru_, it->second);
	return it->second->second;
}

size_t scan_cgroup_tree(const std::string &mount_root, const std::string &rel, CgroupPathCache &cache,
                        std::unordered_set<uint64_t> *ids) {
	const std::string start = rel.empty() ? "/" : rel;
	size_t seen = 0;
	// Depth-first, iteratively (cgroup trees can be deep); each step holds
	// only the path, so no fds pile up.
	std::vector<std::string> todo{start};
	while (!todo.empty()) {
		std::string path = std::move(todo.back());
		todo.pop_back();
		const std::string full = path == "/" ? mount_root : mount_root + path;
		UniqueFd dfd(::open(full.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!dfd)
			continue; // removed meanwhile
		uint64_t id = id_at(dfd.get(), ".");
		if (!id)
			continue;
		cache.put(id, path);
		if (ids)
			ids->insert(id);
		++seen;
		DIR *d = ::fdopendir(::fcntl(dfd.get(), F_DUPFD_CLOEXEC, 0));
		if (!d)
			continue;
		while (dirent *e = ::readdir(d)) {
			if (e->d_type != DT_DIR || !std::strcmp(e->d_name, ".") ||
			    !std::strcmp(e->d_name, ".."))
				continue;
			todo.push_back(path == "/" ? "/" + std::string(e->d_name) : path + "/" + e->d_name);
		}
		::closedir(d);
	}
	return seen;
}

CgroupResolver::CgroupResolver(std::string mount_root, std::string rel, std::string hier_root,
                               size_t capacity)
    : mount_root_(std::move(mount_root)), rel_(std::move(rel)), hier_root_(std::move(hier_root)),
      paths_(capacity) {}

CgroupResolver::~CgroupResolver() {
	ring_buffer__free(events_);
}

void CgroupResolver::listen(int ringbuf_fd) {
	events_ = ring_buffer__new(ringbuf_fd, &CgroupResolver::on_event, this, nullptr);
	if (!events_)
		throw SysError("ring_buffer__new", errno ? errno : EINVAL);
}

int CgroupResolver::on_event(void *ctx, void *data, size_t size) {
	auto *self = static_cast<CgroupResolver *>(ctx);
	uint64_t id = 0;
	std::string path;
	if (cgroup_event_path(data, size, self->hier_root_, id, path) && self->under_target(path))
		self->paths_.put(id, std::move(path));
	return 0;
}

bool CgroupResolver::under_target(const std::string &path) const {
	if (rel_ == "/")
		return true;
	return path.compare(0, rel_.size(), rel_) == 0 &&
	       (path.size() == rel_.size() || path[rel_.size()] == '/');
}

void CgroupResolver::take_events() {
	if (events_)
		ring_buffer__consume(events_);
}

size_t CgroupResolver::scan(std::unordered_set<uint64_t> *ids) {
	take_events();
	return scan_cgroup_tree(mount_root_, rel_, paths_, ids);
}

std::unordered_map<uint64_t, std::string> CgroupResolver::resolve(const std::vector<uint64_t> &ids) {
	take_events();
	std::unordered_map<uint64_t, std::string> out;
	bool rescanned = false;
	for (uint64_t id : ids) {
		if (!id || out.count(id))
			continue;
		auto p = paths_.get(id);
		if (!p && !rescanned) { // made and missed (ring full), or evicted: look again, once
			rescanned = true;
			scan_cgroup_tree(mount_root_, rel_, paths_);
			p = paths_.get(id);
		}
		out[id] = p ? *p : std::string();
	}
	return out;
}

} // namespace pktstat
