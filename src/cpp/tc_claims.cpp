#include "tc_claims.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

namespace pktstat {

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
	if (!std::getline(f, line))
		return std::nullopt;
	auto paren = line.rfind(')');
	if (paren == std::string::npos)
		return std::nullopt;
	std::istringstream rest(line.substr(paren + 1));
	std::string state, field;
	rest >> state; // field 3
	if (state == "Z" || state == "X" || state == "x")
		return std::nullopt;
	for (int i = 4; i < 22 && rest >> field; ++i) {
	}
	unsigned long long start = 0;
	if (!(rest >> start))
		return std::nullopt; // field 22
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

// "<netns dev>-<netns ino>-<ifindex>": what a claim or record is about.
std::string subject(const Netns &ns, int ifindex) {
	return std::to_string(ns.dev()) + "-" + std::to_string(ns.ino()) + "-" + std::to_string(ifindex);
}

std::string claim_path(const Netns &ns, int ifindex) {
	return std::string(kClaimDir) + "/clsact-" + subject(ns, ifindex);
}

// The claim on ifindex's qdisc, if there is one for the interface that has
// this ifindex now (a claim naming another interface is stale: dropped).
std::optional<Claim> read_claim(const std::string &path, int ifindex) {
	std::ifstream f(path);
	Claim c;
	if (!std::getline(f, c.ifname))
		return std::nullopt;
	for (Holder h; f >> h.pid >> h.start;)
		c.holders.push_back(h);
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
		for (const auto &h : c.holders)
			f << h.pid << " " << h.start << "\n";
		if (!f.flush())
			return false;
	}
	return ::rename(tmp.c_str(), path.c_str()) == 0;
}

// Drop the holder `pid` and every holder that is no longer running.
void drop_holders(Claim &c, long pid) {
	auto gone = [pid](const Holder &h) { return h.pid == pid || !alive(h); };
	c.holders.erase(std::remove_if(c.holders.begin(), c.holders.end(), gone), c.holders.end());
}

// release_clsact() with the lock held (or not to be had: !lock.ok()).
bool release_locked(const ClaimLock &lock, const Netns &here, int ifindex, bool created, long pid) {
	const std::string path = claim_path(here, ifindex);
	std::optional<Claim> claim;
	if (lock.ok())
		claim = read_claim(path, ifindex);
	if (!claim) { // no claim (none could be written): the creator decides alone
		if (!created || clsact_has_filters(ifindex))
			return false;
		destroy_clsact(ifindex);
		return true;
	}
	drop_holders(*claim, pid);
	if (!claim->holders.empty()) {
		write_claim(path, *claim);
		return false;
	}
	::unlink(path.c_str());
	if (clsact_has_filters(ifindex))
		return false; // another's filter: the qdisc is theirs now
	destroy_clsact(ifindex);
	return true;
}
} // namespace

ClaimLock::ClaimLock() {
	if (::mkdir(kClaimDir, 0700) < 0 && errno != EEXIST)
		return;
	fd_ =
	    UniqueFd(::open((std::string(kClaimDir) + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
	if (fd_ && ::flock(fd_.get(), LOCK_EX) < 0)
		fd_ = UniqueFd();
}

bool join_qdisc_claim(const ClaimLock &lock, const Netns &ns, int ifindex, bool created) {
	if (!lock.ok())
		return false;
	const std::string path = claim_path(ns, ifindex);
	std::optional<Claim> claim;
	if (created) {
		claim = Claim{ifname_of(ifindex), {}}; // a claim left from before is stale
	} else if ((claim = read_claim(path, ifindex))) {
		drop_holders(*claim, -1);
		if (claim->holders.empty()) { // nobody of ours holds it: not ours any more
			::unlink(path.c_str());
			return false;
		}
	} else {
		return false; // someone else's qdisc
	}
	claim->holders.push_back(me());
	return write_claim(path, *claim);
}

bool release_clsact(int ifindex, bool created, long pid) {
	const Netns here;
	ClaimLock lock;
	return release_locked(lock, here, ifindex, created, pid);
}

// ---- the record of one collector's legacy filters ----------------------------------------------
// legacy-<netns dev>-<netns ino>-<ifindex>-XXXXXX: the interface's name, the
// collector's pid and start time, then one line per filter (direction,
// handle, priority, program id). Made and locked under the ClaimLock, so a
// sweep (also under it) never sees a live collector's record unlocked.
namespace {
const char *dir_word(TcDir d) {
	return d == TcDir::Ingress ? "ingress" : "egress";
}

std::string record_prefix(const Netns &ns) {
	return "legacy-" + std::to_string(ns.dev()) + "-" + std::to_string(ns.ino()) + "-";
}
} // namespace

LegacyRecord::LegacyRecord(const Netns &ns, int ifindex, const std::vector<LegacyFilterId> &filters) {
	ClaimLock lock;
	if (!lock.ok())
		return;
	std::string path =
	    std::string(kClaimDir) + "/" + record_prefix(ns) + std::to_string(ifindex) + "-XXXXXX";
	UniqueFd fd(::mkostemp(path.data(), O_CLOEXEC));
	if (!fd)
		return;
	if (::flock(fd.get(), LOCK_EX) < 0) {
		::unlink(path.c_str());
		return;
	}
	const Holder h = me();
	std::ostringstream text;
	text << ifname_of(ifindex) << "\n" << h.pid << " " << h.start << "\n";
	for (const auto &f : filters)
		text << dir_word(f.dir) << " " << f.handle << " " << f.priority << " " << f.prog_id << "\n";
	const std::string s = text.str();
	if (::write(fd.get(), s.data(), s.size()) != static_cast<ssize_t>(s.size())) {
		::unlink(path.c_str());
		return;
	}
	path_ = std::move(path);
	fd_ = std::move(fd);
}

LegacyRecord::~LegacyRecord() {
	if (path_.empty())
		return;
	ClaimLock lock;
	::unlink(path_.c_str());
}

int sweep_stale_tc() {
	const Netns here;
	ClaimLock lock;
	if (!lock.ok())
		return 0;
	std::unique_ptr<DIR, int (*)(DIR *)> dir(::opendir(kClaimDir), ::closedir);
	if (!dir)
		return 0;
	const std::string prefix = record_prefix(here);
	std::vector<std::string> names;
	while (const dirent *e = ::readdir(dir.get()))
		if (std::string(e->d_name).rfind(prefix, 0) == 0)
			names.emplace_back(e->d_name);
	int undone = 0;
	for (const auto &name : names) {
		const std::string path = std::string(kClaimDir) + "/" + name;
		UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
		if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) < 0)
			continue; // its collector lives
		const int ifindex = std::atoi(name.c_str() + prefix.size());
		std::ifstream f(path);
		std::string ifname, word;
		Holder h; // not needed to undo: for the curious reader of the file
		std::getline(f, ifname);
		f >> h.pid >> h.start;
		bool removed = false;
		if (f && ifindex > 0 &&
		    ifname == ifname_of(ifindex)) { // else the interface went, and all on it
			for (LegacyFilterId id{}; f >> word >> id.handle >> id.priority >> id.prog_id;) {
				id.dir = word == "ingress" ? TcDir::Ingress : TcDir::Egress;
				try {
					removed |= remove_stale_filter(ifindex, id.dir, id.handle,
					                               id.priority, id.prog_id);
				} catch (...) {
				}
			}
			try { // its holder is dead: dropped with every other dead one (not by pid, which may
			      // be reused)
				removed |= release_locked(lock, here, ifindex, false, -1);
			} catch (...) { // the interface went meanwhile
			}
		}
		::unlink(path.c_str());
		undone += removed;
	}
	return undone;
}

} // namespace pktstat
