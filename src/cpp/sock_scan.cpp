#include "sock_scan.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <map>
#include <thread>
#include <unordered_map>

#include "error.hpp"
#include "fd.hpp"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

namespace pktstat {
namespace {

constexpr int kInetDiagCgroupId = 21; // INET_DIAG_CGROUP_ID (5.7+)

bool all_digits(const char *s) {
	if (!*s)
		return false;
	for (; *s; ++s)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

// One dump of `family`/`protocol` on a NETLINK_SOCK_DIAG socket.
void dump(int sock, uint8_t family, uint8_t protocol, uint64_t netns_cookie, std::vector<DiagSocket> &out) {
	struct {
		nlmsghdr nh;
		inet_diag_req_v2 r;
	} req{};
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = 1;
	req.r.sdiag_family = family;
	req.r.sdiag_protocol = protocol;
	req.r.idiag_states = ~0U;
	if (::send(sock, &req, sizeof(req), 0) < 0)
		throw SysError("sock_diag send", errno);

	alignas(nlmsghdr) static thread_local char buf[65536];
	for (;;) {
		ssize_t n = ::recv(sock, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			throw SysError("sock_diag recv", errno);
		}
		if (n == 0)
			return;
		for (auto *nh = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE)
				return;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				int err = -static_cast<nlmsgerr *>(NLMSG_DATA(nh))->error;
				// No diag module for this protocol (e.g. udplite): nothing to list.
				if (err == 0 || err == ENOENT || err == EOPNOTSUPP || err == EINVAL)
					return;
				throw SysError("sock_diag dump", err);
			}
			if (nh->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    nh->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
				continue;
			const auto *m = static_cast<const inet_diag_msg *>(NLMSG_DATA(nh));
			DiagSocket s;
			s.cookie = static_cast<uint64_t>(m->id.idiag_cookie[1]) << 32 | m->id.idiag_cookie[0];
			s.inode = m->idiag_inode;
			s.sport = ntohs(m->id.idiag_sport);
			s.protocol = protocol;
			s.state = m->idiag_state;
			s.family = m->idiag_family;
			s.netns_cookie = netns_cookie;
			int alen = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			for (auto *a = reinterpret_cast<const rtattr *>(reinterpret_cast<const char *>(m) +
			                                                NLMSG_ALIGN(sizeof(*m)));
			     RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
				if (a->rta_type == kInetDiagCgroupId && RTA_PAYLOAD(a) >= sizeof(uint64_t)) {
					std::memcpy(&s.cgroup_id, RTA_DATA(a), sizeof(uint64_t));
					s.has_cgroup = true;
				}
			}
			out.push_back(s);
		}
	}
}

void dump_current_netns(std::vector<DiagSocket> &out) {
	UniqueFd sock(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
	if (!sock)
		throw SysError("socket(NETLINK_SOCK_DIAG)", errno);
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);
	if (::getsockopt(sock.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
		cookie = 0; // < 5.14
	for (uint8_t family : {AF_INET, AF_INET6})
		for (uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE})
			dump(sock.get(), family, proto, cookie, out);
}

} // namespace

std::vector<DiagSocket> diag_all_sockets(size_t *netns_seen) {
	// One open ns file per distinct network namespace.
	std::map<std::pair<dev_t, ino_t>, UniqueFd> namespaces;
	if (DIR *proc = ::opendir("/proc")) {
		while (dirent *e = ::readdir(proc)) {
			if (!all_digits(e->d_name))
				continue;
			std::string p = std::string("/proc/") + e->d_name + "/ns/net";
			struct stat st {};
			if (::stat(p.c_str(), &st) < 0)
				continue; // gone, or a kernel thread
			auto key = std::make_pair(st.st_dev, st.st_ino);
			if (namespaces.count(key))
				continue;
			UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
			if (fd)
				namespaces.emplace(key, std::move(fd));
		}
		::closedir(proc);
	}

	// Namespaces kept by name (ip netns add) may have sockets but no process.
	if (DIR *named = ::opendir("/run/netns")) {
		while (dirent *e = ::readdir(named)) {
			if (e->d_name[0] == '.')
				continue;
			std::string p = std::string("/run/netns/") + e->d_name;
			struct stat st {};
			if (::stat(p.c_str(), &st) < 0)
				continue;
			auto key = std::make_pair(st.st_dev, st.st_ino);
			if (namespaces.count(key))
				continue;
			UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
			if (fd)
				namespaces.emplace(key, std::move(fd));
		}
		::closedir(named);
	}

	std::vector<DiagSocket> out;
	std::exception_ptr failure;
	size_t visited = 0;
	// setns() moves only the calling thread: do it on a thread of our own.
	std::thread worker([&] {
		try {
			for (auto &[key, fd] : namespaces) {
				if (::setns(fd.get(), CLONE_NEWNET) < 0)
					continue; // namespace gone meanwhile
				dump_current_netns(out);
				++visited;
			}
		} catch (...) {
			failure = std::current_exception();
		}
	});
	worker.join();
	if (failure)
		std::rethrow_exception(failure);
	if (netns_seen)
		*netns_seen = visited;
	return out;
}

std::unordered_map<uint32_t, SocketHolders> socket_holders(const std::unordered_set<uint32_t> &wanted,
                                                           size_t *processes) {
	std::unordered_map<uint32_t, SocketHolders> out;
	size_t scanned = 0;
	DIR *proc = ::opendir("/proc");
	if (!proc)
		throw SysError("opendir /proc", errno);
	char link[64];
	while (dirent *e = ::readdir(proc)) {
		if (!all_digits(e->d_name))
			continue;
		const uint32_t pid = static_cast<uint32_t>(std::strtoul(e->d_name, nullptr, 10));
		std::string base = std::string("/proc/") + e->d_name;
		UniqueFd fddir(::open((base + "/fd").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!fddir)
			continue; // exited, or a kernel thread
		++scanned;
		DIR *d = ::fdopendir(::fcntl(fddir.get(), F_DUPFD_CLOEXEC, 0));
		if (!d)
			continue;
		std::string comm;
		bool have_comm = false;
		while (dirent *f = ::readdir(d)) {
			if (f->d_name[0] == '.')
				continue;
			ssize_t n = ::readlinkat(fddir.get(), f->d_name, link, sizeof(link) - 1);
			if (n < 9 || std::memcmp(link, "socket:[", 8) != 0)
				continue;
			link[n] = '\0';
			uint32_t ino = static_cast<uint32_t>(std::strtoul(link + 8, nullptr, 10));
			if (!wanted.count(ino))
				continue;
			SocketHolders &h = out[ino];
			if (!h.pids.empty() && h.pids.back() == pid)
				continue; // a second fd of one process
			if (!have_comm) {
				have_comm = true;
				UniqueFd cf(::open((base + "/comm").c_str(), O_RDONLY | O_CLOEXEC));
				char cb[32] = {};
				ssize_t cn = cf ? ::read(cf.get(), cb, sizeof(cb) - 1) : -1;
				if (cn > 0)
					comm.assign(cb, cn > 0 && cb[cn - 1] == '\n' ? cn - 1 : cn);
			}
			h.pids.push_back(pid);
			h.comms.push_back(comm);
		}
		::closedir(d);
	}
	::closedir(proc);
	if (processes)
		*processes = scanned;
	return out;
}

sock_owner owner_from_holders(const SocketHolders *h) {
	sock_owner o{};
	o.flags = OWNER_SCANNED;
	if (!h || h->pids.empty()) {
		o.flags |= OWNER_UNCLAIMED;
		return o;
	}
	bool same = true;
	for (const std::string &c : h->comms)
		same = same && c == h->comms.front();
	if (same)
		std::strncpy(o.comm, h->comms.front().c_str(), sizeof(o.comm) - 1);
	if (h->pids.size() == 1) {
		o.pid = h->pids.front();
	} else {
		o.flags |= OWNER_SHARED;
	}
	return o;
}

} // namespace pktstat
