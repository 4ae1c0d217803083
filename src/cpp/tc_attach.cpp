#include "tc_attach.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>
#include <vector>

#include "error.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

bpf_tc_attach_point to_point(TcDir d) { return d == TcDir::Ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS; }
const char *dir_name(TcDir d) { return d == TcDir::Ingress ? "ingress" : "egress"; }

uint32_t prog_id_of(int prog_fd) {
	bpf_prog_info info{};
	uint32_t len = sizeof(info);
	check_libbpf(bpf_obj_get_info_by_fd(prog_fd, &info, &len), "bpf_obj_get_info_by_fd");
	return info.id;
}

// Count the filters (any kind, any owner) on one clsact hook via an
// RTM_GETTFILTER dump. Throws on netlink errors other than "no qdisc".
size_t count_filters(int ifindex, uint32_t parent) {
	UniqueFd sock(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
	if (!sock) throw SysError("socket(NETLINK_ROUTE)", errno);
	struct {
		nlmsghdr nh;
		tcmsg tc;
	} req{};
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = RTM_GETTFILTER;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = 1;
	req.tc.tcm_family = AF_UNSPEC;
	req.tc.tcm_ifindex = ifindex;
	req.tc.tcm_parent = parent;
	if (::send(sock.get(), &req, sizeof(req), 0) < 0) throw SysError("netlink send RTM_GETTFILTER", errno);

	size_t count = 0;
	alignas(nlmsghdr) char buf[16384];
	for (;;) {
		ssize_t n = ::recv(sock.get(), buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR) continue;
			throw SysError("netlink recv RTM_GETTFILTER", errno);
		}
		for (auto *nh = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE) return count;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				int err = -static_cast<nlmsgerr *>(NLMSG_DATA(nh))->error;
				if (err == 0) return count;
				if (err == EINVAL || err == ENOENT) return 0; // no clsact qdisc
				throw SysError("netlink RTM_GETTFILTER", err);
			}
			if (nh->nlmsg_type == RTM_NEWTFILTER) ++count;
		}
	}
}

constexpr uint32_t kParentIngress = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
constexpr uint32_t kParentEgress = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS);

} // namespace

bool clsact_has_filters(int ifindex) {
	return count_filters(ifindex, kParentIngress) + count_filters(ifindex, kParentEgress) > 0;
}

namespace {
constexpr const char *kThreadNetns = "/proc/thread-self/ns/net";

bool same_file(int fd, uint64_t dev, uint64_t ino) {
	struct stat st {};
	return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}
} // namespace

Netns::Netns() : fd_(::open(kThreadNetns, O_RDONLY | O_CLOEXEC)) {
	struct stat st {};
	if (!fd_ || ::fstat(fd_.get(), &st) < 0) throw SysError(std::string("open ") + kThreadNetns, errno);
	dev_ = st.st_dev;
	ino_ = st.st_ino;
}

bool Netns::run_in(const std::function<void()> &f) const noexcept {
	UniqueFd here(::open(kThreadNetns, O_RDONLY | O_CLOEXEC));
	if (!here) return false;
	if (same_file(here.get(), dev_, ino_)) {
		try {
			f();
		} catch (...) {
		}
		return true;
	}
	if (::setns(fd_.get(), CLONE_NEWNET) < 0) return false;
	try {
		f();
	} catch (...) {
	}
	::setns(here.get(), CLONE_NEWNET); // back where the thread was
	return true;
}

// ---- who made the clsact qdisc, across processes -------------------------------------------
// A qdisc has no owner field, so pktstat-bpf keeps a claim file per (netns,
// ifindex) under kClaimDir, naming the interface and the processes (pid and
// start time) that hold filters on a qdisc one of them created. The last
// holder out removes the qdisc if no filter is left on it; if another's
// filter is left, the claim is dropped and the qdisc is no longer ours. A
// qdisc made by anyone else never gets a claim, so it is never removed.
// Every step runs under an flock; a claim whose holders are all dead is
// stale. Without a writable kClaimDir, only the process that made the qdisc
// removes it (and two processes may then leave it behind, empty).
namespace {
constexpr const char *kClaimDir = "/run/pktstat-bpf";

struct Holder {
	long pid = 0;
	unsigned long long start = 0; // clock ticks after boot: tells a reused pid apart
};

struct Claim {
	std::string ifname;
	std::vector<Holder> holders;
};

// The start time of a live process, nullopt if it is gone (or a zombie).
std::optional<unsigned long long> start_time_of(long pid) {
	std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
	std::string line;
	if (!std::getline(f, line)) return std::nullopt;
	auto paren = line.rfind(')');
	if (paren == std::string::npos) return std::nullopt;
	std::istringstream rest(line.substr(paren + 1));
	std::string state, field;
	rest >> state; // field 3
	if (state == "Z" || state == "X" || state == "x") return std::nullopt;
	for (int i = 4; i < 22 && rest >> field; ++i) {
	}
	unsigned long long start = 0;
	if (!(rest >> start)) return std::nullopt; // field 22
	return start;
}

Holder me() {
	Holder h;
	h.pid = ::getpid();
	h.start = start_time_of(h.pid).value_or(0);
	return h;
}

bool alive(const Holder &h) {
	auto start = start_time_of(h.pid);
	return start && *start == h.start;
}

std::string ifname_of(int ifindex) {
	char name[IF_NAMESIZE] = {};
	return ::if_indextoname(static_cast<unsigned>(ifindex), name) ? name : "";
}

class ClaimLock {
public:
	ClaimLock() {
		if (::mkdir(kClaimDir, 0700) < 0 && errno != EEXIST) return;
		fd_ = UniqueFd(::open((std::string(kClaimDir) + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
		if (fd_ && ::flock(fd_.get(), LOCK_EX) < 0) fd_ = UniqueFd();
	}
	bool ok() const noexcept { return static_cast<bool>(fd_); }

private:
	UniqueFd fd_; // closing it releases the lock
};

std::string claim_path(const Netns &ns, int ifindex) {
	return std::string(kClaimDir) + "/clsact-" + std::to_string(ns.dev()) + "-" + std::to_string(ns.ino()) + "-" +
	       std::to_string(ifindex);
}

// The claim on ifindex's qdisc, if there is one for the interface that has
// this ifindex now (a claim naming another interface is stale: dropped).
std::optional<Claim> read_claim(const std::string &path, int ifindex) {
	std::ifstream f(path);
	Claim c;
	if (!std::getline(f, c.ifname)) return std::nullopt;
	for (Holder h; f >> h.pid >> h.start;) c.holders.push_back(h);
	if (c.ifname != ifname_of(ifindex)) {
		::unlink(path.c_str());
		return std::nullopt;
	}
	return c;
}

bool write_claim(const std::string &path, const Claim &c) {
	const std::string tmp = path + ".new";
	{
		std::ofstream f(tmp, std::ios::trunc);
		f << c.ifname << "\n";
		for (const auto &h : c.holders) f << h.pid << " " << h.start << "\n";
		if (!f.flush()) return false;
	}
	return ::rename(tmp.c_str(), path.c_str()) == 0;
}

// Drop the holder `pid` and every holder that is no longer running.
void drop_holders(Claim &c, long pid) {
	auto gone = [pid](const Holder &h) { return h.pid == pid || !alive(h); };
	c.holders.erase(std::remove_if(c.holders.begin(), c.holders.end(), gone), c.holders.end());
}

void destroy_clsact(int ifindex) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
	            .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
	bpf_tc_hook_destroy(&hook);
}
} // namespace

std::shared_ptr<ClsactQdisc> ClsactQdisc::acquire(int ifindex) {
	static std::mutex mu;
	static std::map<std::tuple<uint64_t, uint64_t, int>, std::weak_ptr<ClsactQdisc>> owners;
	struct stat st {};
	if (::stat(kThreadNetns, &st) < 0) throw SysError(std::string("stat ") + kThreadNetns, errno);
	const auto key = std::make_tuple(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), ifindex);
	std::lock_guard<std::mutex> lock(mu);
	for (auto it = owners.begin(); it != owners.end();) // forget the owners that are gone
		it = it->second.expired() ? owners.erase(it) : std::next(it);
	if (auto q = owners[key].lock()) return q;
	auto q = std::make_shared<ClsactQdisc>(ifindex);
	owners[key] = q;
	return q;
}

ClsactQdisc::ClsactQdisc(int ifindex) : ifindex_(ifindex) {
	ClaimLock lock;
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	int rc = bpf_tc_hook_create(&hook);
	if (rc != -EEXIST) check_libbpf(rc, "create clsact qdisc");
	created_ = rc == 0;
	if (!lock.ok()) return;
	const std::string path = claim_path(netns_, ifindex);
	std::optional<Claim> claim;
	if (created_) {
		claim = Claim{ifname_of(ifindex), {}}; // a claim left from before is stale
	} else if ((claim = read_claim(path, ifindex))) {
		drop_holders(*claim, -1);
		if (claim->holders.empty()) { // nobody of ours holds it: not ours any more
			::unlink(path.c_str());
			return;
		}
	} else {
		return; // someone else's qdisc
	}
	claim->holders.push_back(me());
	claimed_ = write_claim(path, *claim);
}

ClsactQdisc::~ClsactQdisc() {
	if (!created_ && !claimed_) return;
	// Throwing means the interface is gone (and its qdisc with it): nothing to undo.
	netns_.run_in([this] { release_clsact(ifindex_, created_, ::getpid()); });
}

bool release_clsact(int ifindex, bool created, long pid) {
	const Netns here;
	ClaimLock lock;
	const std::string path = claim_path(here, ifindex);
	std::optional<Claim> claim;
	if (lock.ok()) claim = read_claim(path, ifindex);
	if (!claim) { // no claim (none could be written): the creator decides alone
		if (!created || clsact_has_filters(ifindex)) return false;
		destroy_clsact(ifindex);
		return true;
	}
	drop_holders(*claim, pid);
	if (!claim->holders.empty()) {
		write_claim(path, *claim);
		return false;
	}
	::unlink(path.c_str());
	if (clsact_has_filters(ifindex)) return false; // another's filter: the qdisc is theirs now
	destroy_clsact(ifindex);
	return true;
}

LegacyTcFilter::LegacyTcFilter(std::shared_ptr<ClsactQdisc> qdisc, TcDir dir, int prog_fd)
    : qdisc_(std::move(qdisc)), dir_(dir) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = qdisc_->ifindex(), .attach_point = to_point(dir));
	// handle 0 / priority 0: the kernel picks free ones (and echoes them back).
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd);
	check_libbpf(bpf_tc_attach(&hook, &opts), std::string("attach tc filter (") + dir_name(dir) + ")");
	handle_ = opts.handle;
	priority_ = opts.priority;
	prog_id_ = opts.prog_id ? opts.prog_id : prog_id_of(prog_fd);
}

LegacyTcFilter::~LegacyTcFilter() {
	qdisc_->netns().run_in([this] {
		LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = qdisc_->ifindex(), .attach_point = to_point(dir_));
		LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle_, .priority = priority_);
		bpf_tc_detach(&hook, &opts); // fails only if the interface is gone
	});
}

bool remove_stale_filter(int ifindex, TcDir dir, uint32_t handle, uint32_t priority, uint32_t prog_id) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = to_point(dir));
	LIBBPF_OPTS(bpf_tc_opts, query, .handle = handle, .priority = priority);
	if (bpf_tc_query(&hook, &query) < 0 || query.prog_id != prog_id) return false;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	return bpf_tc_detach(&hook, &opts) == 0;
}

std::string TcAttachment::describe() const {
	if (is_tcx()) return "tcx";
	return "tc-legacy";
}

TcAttachment attach_tc(int prog_fd, int ifindex, TcDir dir, TcAttachMode mode,
                       std::shared_ptr<ClsactQdisc> &qdisc) {
	if (mode != TcAttachMode::Legacy) {
		// First in the chain, so programs that drop or redirect cannot hide
		// packets from us; fall back to appending where ordering is refused.
		int type = dir == TcDir::Ingress ? kBpfTcxIngress : kBpfTcxEgress;
		LIBBPF_OPTS(bpf_link_create_opts, first, .flags = kBpfFBefore);
		const bool no_tcx = forced_missing("tcx"); // tests: a kernel before 6.6 answers EINVAL
		int fd = no_tcx ? -EINVAL : bpf_link_create(prog_fd, ifindex, static_cast<bpf_attach_type>(type), &first);
		if (fd == -EINVAL && !no_tcx)
			fd = bpf_link_create(prog_fd, ifindex, static_cast<bpf_attach_type>(type), nullptr);
		if (fd >= 0) return TcAttachment{TcxLink{UniqueFd(fd)}};
		// EINVAL: this kernel has no TCX attach types. Anything else is real.
		if (mode == TcAttachMode::Tcx || fd != -EINVAL)
			throw SysError(std::string("attach tcx (") + dir_name(dir) + ")", -fd);
	}
	if (!qdisc) qdisc = ClsactQdisc::acquire(ifindex);
	return TcAttachment{std::make_unique<LegacyTcFilter>(qdisc, dir, prog_fd)};
}

} // namespace pktstat
