#include "tc_attach.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "error.hpp"
#include "tc_claims.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

bpf_tc_attach_point to_point(TcDir d) {
	return d == TcDir::Ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}
const char *dir_name(TcDir d) {
	return d == TcDir::Ingress ? "ingress" : "egress";
}

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
	if (!sock)
		throw SysError("socket(NETLINK_ROUTE)", errno);
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
	if (::send(sock.get(), &req, sizeof(req), 0) < 0)
		throw SysError("netlink send RTM_GETTFILTER", errno);

	size_t count = 0;
	alignas(nlmsghdr) char buf[16384];
	for (;;) {
		ssize_t n = ::recv(sock.get(), buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			throw SysError("netlink recv RTM_GETTFILTER", errno);
		}
		for (auto *nh = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE)
				return count;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				int err = -static_cast<nlmsgerr *>(NLMSG_DATA(nh))->error;
				if (err == 0)
					return count;
				if (err == EINVAL || err == ENOENT)
					return 0; // no clsact qdisc
				throw SysError("netlink RTM_GETTFILTER", err);
			}
			if (nh->nlmsg_type == RTM_NEWTFILTER)
				++count;
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
	if (!fd_ || ::fstat(fd_.get(), &st) < 0)
		throw SysError(std::string("open ") + kThreadNetns, errno);
	dev_ = st.st_dev;
	ino_ = st.st_ino;
}

bool Netns::run_in(const std::function<void()> &f) const noexcept {
	UniqueFd here(::open(kThreadNetns, O_RDONLY | O_CLOEXEC));
	if (!here)
		return false;
	if (same_file(here.get(), dev_, ino_)) {
		try {
			f();
		} catch (...) {
		}
		return true;
	}
	if (::setns(fd_.get(), CLONE_NEWNET) < 0)
		return false;
	try {
		f();
	} catch (...) {
	}
	::setns(here.get(), CLONE_NEWNET); // back where the thread was
	return true;
}

void destroy_clsact(int ifindex) {
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
	            .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
	bpf_tc_hook_destroy(&hook);
}

std::shared_ptr<ClsactQdisc> ClsactQdisc::acquire(int ifindex) {
	static std::mutex mu;
	static std::map<std::tuple<uint64_t, uint64_t, int>, std::weak_ptr<ClsactQdisc>> owners;
	struct stat st {};
	if (::stat(kThreadNetns, &st) < 0)
		throw SysError(std::string("stat ") + kThreadNetns, errno);
	const auto key =
	    std::make_tuple(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), ifindex);
	std::lock_guard<std::mutex> lock(mu);
	for (auto it = owners.begin(); it != owners.end();) // forget the owners that are gone
		it = it->second.expired() ? owners.erase(it) : std::next(it);
	if (auto q = owners[key].lock())
		return q;
	auto q = std::make_shared<ClsactQdisc>(ifindex);
	owners[key] = q;
	return q;
}

ClsactQdisc::ClsactQdisc(int ifindex) : ifindex_(ifindex) {
	ClaimLock lock; // making the qdisc and claiming it are one step for other processes
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	int rc = bpf_tc_hook_create(&hook);
	if (rc != -EEXIST)
		check_libbpf(rc, "create clsact qdisc");
	created_ = rc == 0;
	claimed_ = join_qdisc_claim(lock, netns_, ifindex, created_);
}

ClsactQdisc::~ClsactQdisc() {
	if (!created_ && !claimed_)
		return;
	// Throwing means the interface is gone (and its qdisc with it): nothing to undo.
	netns_.run_in([this] { release_clsact(ifindex_, created_, ::getpid()); });
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
	if (bpf_tc_query(&hook, &query) < 0 || query.prog_id != prog_id)
		return false;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	return bpf_tc_detach(&hook, &opts) == 0;
}

std::string TcAttachment::describe() const {
	if (is_tcx())
		return "tcx";
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
		int fd = no_tcx
		             ? -EINVAL
		             : bpf_link_create(prog_fd, ifindex, static_cast<bpf_attach_type>(type), &first);
		if (fd == -EINVAL && !no_tcx)
			fd = bpf_link_create(prog_fd, ifindex, static_cast<bpf_attach_type>(type), nullptr);
		if (fd >= 0)
			return TcAttachment{TcxLink{UniqueFd(fd)}};
		// EINVAL: this kernel has no TCX attach types. Anything else is real.
		if (mode == TcAttachMode::Tcx || fd != -EINVAL)
			throw SysError(std::string("attach tcx (") + dir_name(dir) + ")", -fd);
	}
	if (!qdisc)
		qdisc = ClsactQdisc::acquire(ifindex);
	return TcAttachment{std::make_unique<LegacyTcFilter>(qdisc, dir, prog_fd)};
}

} // namespace pktstat
