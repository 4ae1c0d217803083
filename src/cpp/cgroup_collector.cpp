#include "cgroup_collector.hpp"

#include "flow_table.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/vfs.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "error.hpp"
#include "kernel_btf.hpp"
#include "sock_scan.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

constexpr long kCgroup2Magic = 0x63677270; // CGROUP2_SUPER_MAGIC
constexpr uint8_t kTcpListen = 10;

std::string join(const std::string &root, const std::string &rel) {
	return rel == "/" ? root : root + rel;
}

} // namespace

CgroupCollector::CgroupCollector(const CgroupOptions &opts)
    : opts_(opts), cgroups_(opts.mount_root, opts.rel_path, opts.hier_root, opts.path_cache) {
	if (opts.max_entries == 0 || opts.owner_entries == 0)
		throw SysError("map sizes must be positive", EINVAL);
	const std::string dir = join(opts.mount_root, opts.rel_path);
	cgroup_fd_ = UniqueFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!cgroup_fd_)
		throw SysError("open cgroup " + dir, errno);
	struct statfs fs {};
	if (::fstatfs(cgroup_fd_.get(), &fs) < 0)
		throw SysError("statfs " + dir, errno);
	if (fs.f_type != kCgroup2Magic)
		throw SysError(dir + " is not on a cgroup v2 file system", ENOTDIR);
	cgroup_id_ = cgroup_id_of(dir);

	// The socket tracepoints came in 6.3; without them a process is still
	// attributed by sock_create, sock_ops and the start scan.
	// tp_btf programs and CO-RE need the kernel's BTF: without it nothing here loads.
	const KernelBtf btf;
	btf.require("cgroup mode");
	have_sock_tps_ = !forced_missing("sock_tracepoints") && btf.has_tracepoint("sock_send_length") &&
	                 btf.has_tracepoint("sock_recv_length");
	const bool have_mkdir_tp = !forced_missing("cgroup_mkdir") && btf.has_tracepoint("cgroup_mkdir");
	bpf_program__set_autoload(skel_->progs.owner_send, have_sock_tps_);
	bpf_program__set_autoload(skel_->progs.owner_recv, have_sock_tps_);
	bpf_program__set_autoload(skel_->progs.owner_cgroup_mkdir, have_mkdir_tp);

	skel_->rodata->cfg_dfl_hierarchy = 0; // cgroup v2 is hierarchy 0 ("0::/..." in /proc/<pid>/cgroup)
	set_flow_table_size(skel_->obj, opts.max_entries);
	check_libbpf(bpf_map__set_max_entries(skel_->maps.owners, opts.owner_entries), "set owner map size");
	check_libbpf(bpf_map__set_max_entries(skel_->maps.released, opts.owner_entries),
	             "set release queue size");
	skel_.load();
	epoch_offset_ns_ = monotonic_to_epoch_offset_ns();
	drain_ =
	    std::make_unique<FlowDrain>(skel_->obj, epoch_offset_ns_, true, epoch_now_ns(epoch_offset_ns_));
	drain_->set_after_drain([this] { reap_released(); });

	cgroups_.listen(bpf_map__fd(skel_->maps.cgroup_events));
}

CgroupCollector::~CgroupCollector() {
	detach();
}

void CgroupCollector::attach() {
	if (attached())
		return;
	int step = 0;
	auto add = [&](bpf_link *l, const char *what) {
		if (injected_attach_fault(step++)) {
			bpf_link__destroy(l);
			throw SysError("attach (injected test fault)", EIO);
		}
		if (!l)
			throw SysError(std::string("attach ") + what, errno ? errno : EINVAL);
		links_.emplace_back(l);
	};
	const int cg = cgroup_fd_.get();
	try {
		if (bpf_program__autoload(skel_->progs.owner_cgroup_mkdir))
			add(bpf_program__attach_trace(skel_->progs.owner_cgroup_mkdir),
			    "tp_btf/cgroup_mkdir");
		add(bpf_program__attach_trace(skel_->progs.owner_fork), "tp_btf/sched_process_fork");
		if (have_sock_tps_) {
			add(bpf_program__attach_trace(skel_->progs.owner_send), "tp_btf/sock_send_length");
			add(bpf_program__attach_trace(skel_->progs.owner_recv), "tp_btf/sock_recv_length");
		}
		add(bpf_program__attach_cgroup(skel_->progs.owner_sock_create, cg), "cgroup/sock_create");
		add(bpf_program__attach_cgroup(skel_->progs.owner_sock_release, cg), "cgroup/sock_release");
		add(bpf_program__attach_cgroup(skel_->progs.owner_sockops, cg), "cgroup sock_ops");

		// Hooks first, then the scans: a socket made meanwhile is caught by
		// the hooks, and the scan never overwrites what a hook recorded.
		auto t0 = std::chrono::steady_clock::now();
		subtree_.clear();
		scan_.cgroups = cgroups_.scan(&subtree_);
		if (opts_.scan_sockets)
			scan_existing_sockets();
		scan_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

		add(bpf_program__attach_cgroup(skel_->progs.owner_skb_egress, cg), "cgroup_skb/egress");
		add(bpf_program__attach_cgroup(skel_->progs.owner_skb_ingress, cg), "cgroup_skb/ingress");
	} catch (...) {
		detach();
		throw;
	}
}

void CgroupCollector::detach() noexcept {
	while (!links_.empty())
		links_.pop_back(); // cgroup_skb first, the owner hooks last
}

std::string CgroupCollector::attach_path() const {
	return links_.empty() ? std::string() : "cgroup_skb";
}

std::vector<std::string> CgroupCollector::owner_sources() const {
	std::vector<std::string> s{"sock_create", "sock_ops"};
	if (have_sock_tps_)
		s.emplace_back("send/recv tracepoints");
	if (opts_.scan_sockets)
		s.emplace_back("start scan");
	return s;
}

void CgroupCollector::scan_existing_sockets() {
	size_t netns = 0, processes = 0;
	std::vector<DiagSocket> socks = diag_all_sockets(&netns);
	std::vector<const DiagSocket *> ours;
	std::unordered_set<uint32_t> wanted;
	for (const DiagSocket &s : socks) {
		if (s.has_cgroup && !subtree_.count(s.cgroup_id))
			continue; // not in our subtree
		if (!s.inode || !s.cookie)
			continue; // no file: TIME_WAIT, a request, an orphan
		ours.push_back(&s);
		wanted.insert(s.inode);
	}
	auto holders = socket_holders(wanted, &processes);

	const int ofd = bpf_map__fd(skel_->maps.owners);
	const int ffd = bpf_map__fd(skel_->maps.forks);
	std::map<std::pair<uint64_t, uint16_t>, std::pair<uint64_t, sock_owner>> listeners;
	for (const DiagSocket *s : ours) {
		auto it = holders.find(s->inode);
		sock_owner o = owner_from_holders(it == holders.end() ? nullptr : &it->second);
		if (o.pid) { // start counting its forks (or take the count a hook started)
			uint32_t zero = 0;
			bpf_map_update_elem(ffd, &o.pid, &zero, BPF_NOEXIST);
			bpf_map_lookup_elem(ffd, &o.pid, &o.gen);
		}
		int rc = bpf_map_update_elem(ofd, &s->cookie, &o, BPF_NOEXIST);
		if (rc < 0 && rc != -EEXIST && errno != EEXIST)
			throw SysError("fill the owner map", errno);
		if (o.flags & OWNER_SHARED)
			++scan_.shared;
		else if (o.pid)
			++scan_.owned;
		else
			++scan_.unclaimed;
		if (s->protocol != IPPROTO_TCP || s->state != kTcpListen)
			continue;
		// Listeners: one owner per (netns, port), or ambiguous (cookie 0).
		auto key = std::make_pair(s->netns_cookie, s->sport);
		auto [pos, fresh] = listeners.emplace(key, std::make_pair(s->cookie, o));
		if (!fresh) {
			const sock_owner &a = pos->second.second;
			bool one = a.pid && o.pid && a.pid == o.pid && !((a.flags | o.flags) & OWNER_SHARED);
			if (!one)
				pos->second.first = 0;
		}
	}
	const int lfd = bpf_map__fd(skel_->maps.listeners);
	for (const auto &[key, val] : listeners) {
		listener_key k{};
		k.netns_cookie = key.first;
		k.port = key.second;
		bpf_map_update_elem(lfd, &k, &val.first, BPF_NOEXIST); // a listen() since attach wins
	}
	scan_.netns = netns;
	scan_.sockets = socks.size();
	scan_.in_cgroup = ours.size();
	scan_.listeners = listeners.size();
	scan_.processes = processes;
}

std::unordered_map<uint64_t, std::string> CgroupCollector::resolve_cgroups(const std::vector<uint64_t> &ids) {
	return cgroups_.resolve(ids);
}

// The owners of sockets released at least kReapGraceNs before this drain
// go: their last packets (FIN, orphaned data) have been counted with them.
// O(sockets released), never a walk of the owner map.
void CgroupCollector::reap_released() {
	const uint64_t now = epoch_now_ns(0);
	const int qfd = bpf_map__fd(skel_->maps.released), ofd = bpf_map__fd(skel_->maps.owners);
	uint64_t cookie = 0;
	while (bpf_map_lookup_and_delete_elem(qfd, nullptr, &cookie) == 0)
		released_.emplace_back(now, cookie);
	while (!released_.empty() && released_.front().first + kReapGraceNs <= now) {
		cookie = released_.front().second;
		released_.pop_front();
		if (bpf_map_delete_elem(ofd, &cookie) == 0)
			++removed_;
	}
}

std::vector<uint64_t> CgroupCollector::owner_stats() const {
	const int ncpu = libbpf_num_possible_cpus();
	std::vector<uint64_t> per_cpu(ncpu > 0 ? ncpu : 1), out(OWNER_STAT_NR);
	const int fd = bpf_map__fd(skel_->maps.owner_stats);
	for (uint32_t i = 0; i < OWNER_STAT_NR; ++i) {
		check_libbpf(bpf_map_lookup_elem(fd, &i, per_cpu.data()), "read owner counters");
		for (uint64_t v : per_cpu)
			out[i] += v;
	}
	return out;
}

std::vector<CgroupCollector::OwnerEntry> CgroupCollector::owners() const {
	std::vector<OwnerEntry> out;
	const int fd = bpf_map__fd(skel_->maps.owners);
	uint64_t key = 0, next = 0;
	bool have = false;
	while (bpf_map_get_next_key(fd, have ? &key : nullptr, &next) == 0) {
		key = next;
		have = true;
		OwnerEntry e{key, {}};
		if (bpf_map_lookup_elem(fd, &key, &e.owner) == 0)
			out.push_back(e);
	}
	return out;
}

} // namespace pktstat
