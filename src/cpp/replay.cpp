#include "replay.hpp"

#include <bpf/bpf.h>
#include <linux/if_ether.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "error.hpp"
#include "flow_table.hpp"

namespace pktstat {
namespace {

std::string linktype_text(int dlt) {
	std::string name = PcapSource::dlt_name(dlt), desc = PcapSource::dlt_description(dlt);
	std::string s = name.empty() ? "DLT " + std::to_string(dlt) : name;
	if (!desc.empty())
		s += " (" + desc + ")";
	else if (name.empty())
		s += " (unknown)";
	return s;
}

} // namespace

bool Replayer::link_kind(int dlt, LinkKind &out) {
	return pktstat::link_kind(dlt, out);
}

// The per-frame work: turn a record into test-run data and run it. Owns the
// buffer for synthesised Ethernet headers and a prepared syscall attribute,
// so the loop makes no allocation and only one system call per frame.
struct Replayer::Run {
	Replayer &r;
	LinkKind kind;
	std::vector<uint8_t> buf; // synthesised frames: Ethernet header + network header on
	__sk_buff ctx;
	union bpf_attr attr;

	Run(Replayer &rep, LinkKind k) : r(rep), kind(k), buf(rep.max_data_) {
		// Every byte zero: the kernel refuses (EINVAL) an attribute whose bytes
		// past the fields it knows are not, and `= {}` on a union only promises
		// its first member (clang leaves the rest as the heap had it).
		std::memset(&ctx, 0, sizeof(ctx));
		std::memset(&attr, 0, sizeof(attr));
		attr.test.prog_fd = static_cast<__u32>(rep.prog_fd_);
		attr.test.ctx_in = reinterpret_cast<__u64>(&ctx);
		attr.test.ctx_size_in = sizeof(ctx);
	}

	// Frame of `caplen` captured bytes, `wire` bytes on the wire, at `ts`.
	void frame(const uint8_t *p, uint32_t caplen, uint32_t wire, uint64_t ts) {
		ReplayCounters &c = r.counters_;
		if (!c.frames || ts < c.earliest_ts_ns)
			c.earliest_ts_ns = ts;
		if (!c.frames || ts > c.latest_ts_ns)
			c.latest_ts_ns = ts;
		c.frames++;
		c.bytes += wire;
		const FramePlan plan = plan_frame(kind, p, caplen, r.max_data_, buf.data());
		if (plan.action == FramePlan::EngineUnparsed)
			return engine_unparsed(wire);
		if (plan.clipped)
			c.clipped_frames++;
		run(plan.data, plan.len, wire, ts);
	}

	void engine_unparsed(uint32_t wire) {
		r.counters_.engine_unparsed_frames++;
		r.counters_.engine_unparsed_bytes += wire;
	}

	void run(const uint8_t *data, uint32_t len, uint32_t wire, uint64_t ts) {
		ctx.cb[REPLAY_CB_TS_LO] = static_cast<__u32>(ts);
		ctx.cb[REPLAY_CB_TS_HI] = static_cast<__u32>(ts >> 32);
		ctx.cb[REPLAY_CB_WIRE_LEN] = wire;
		attr.test.data_in = reinterpret_cast<__u64>(data);
		attr.test.data_size_in = len;
		attr.test.data_size_out = 0; // the kernel writes these back: a stale size hint
		attr.test.ctx_size_out = 0;  // would make the next run fail with ENOSPC
		// The raw syscall: libbpf's wrapper would rebuild the attribute each time.
		if (::syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr)) < 0)
			throw SysError("BPF_PROG_TEST_RUN (frame " + std::to_string(r.counters_.frames) + ")",
			               errno);
		r.counters_.kernel_frames++;
	}
};

Replayer::Replayer(uint32_t max_entries, bool arp, bool tcp_health) : max_entries_(max_entries) {
	if (max_entries == 0)
		throw SysError("max_entries must be positive", EINVAL);
	skel_->rodata->cfg_replay = true;
	skel_->rodata->cfg_arp = arp;
	skel_->rodata->cfg_tcp_health = tcp_health;
	set_flow_table_size(skel_->obj, max_entries);
	// Only tc_ingress runs here: do not spend verifier time on tc_egress.
	check_libbpf(bpf_program__set_autoload(skel_->progs.tc_egress, false), "set autoload");
	skel_.load();
	prog_fd_ = bpf_program__fd(skel_->progs.tc_ingress);
	drain_ = std::make_unique<FlowDrain>(skel_->obj, 0, false, 0);
	probe_max_data();
}

// The largest data BPF_PROG_TEST_RUN takes for a tc program: a page minus the
// skb's headroom and shared-info tailroom, which depend on the kernel's
// configuration; found by bisection with frames the program counts as
// unparsed, after which the counters are zeroed again.
void Replayer::probe_max_data() {
	const uint32_t page = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
	std::vector<uint8_t> zeros(page);
	__sk_buff ctx{};
	auto accepted = [&](uint32_t n) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = zeros.data(), .data_size_in = n, .ctx_in = &ctx,
		            .ctx_size_in = sizeof(ctx));
		return bpf_prog_test_run_opts(prog_fd_, &o) == 0;
	};
	if (!accepted(ETH_HLEN)) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = zeros.data(), .data_size_in = ETH_HLEN,
		            .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
		check_libbpf(bpf_prog_test_run_opts(prog_fd_, &o), "BPF_PROG_TEST_RUN");
	}
	uint32_t lo = ETH_HLEN, hi = page + 1; // lo accepted, hi refused
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		(accepted(mid) ? lo : hi) = mid;
	}
	max_data_ = lo;
	zero_stats();
}

void Replayer::zero_stats() {
	std::vector<dir_stats> zeros(static_cast<size_t>(possible_cpus()));
	for (uint32_t d = 0; d < FLOW_DIR_NR; ++d)
		check_libbpf(bpf_map_update_elem(stats_fd(), &d, zeros.data(), BPF_ANY), "zero counters");
}

void Replayer::clear() {
	drain_->clear();
	empty_map(bpf_map__fd(skel_->maps.tcp_track)); // the connections of the last capture
	counters_ = ReplayCounters{};
	drained_ = ReplayCounters{};
}

namespace {
// The engine-side unparsed frames between two readings of the counters, as
// FLOW_DIR_NONE counters.
std::vector<dir_stats> engine_unparsed(const ReplayCounters &now, const ReplayCounters &before) {
	std::vector<dir_stats> s(FLOW_DIR_NR);
	dir_stats &none = s.at(FLOW_DIR_NONE);
	none.packets = none.unparsed_packets = now.engine_unparsed_frames - before.engine_unparsed_frames;
	none.bytes = none.unparsed_bytes = now.engine_unparsed_bytes - before.engine_unparsed_bytes;
	return s;
}
} // namespace

std::vector<dir_stats> Replayer::read_stats() const {
	std::vector<dir_stats> s =
	    drain_->totals(true); // drained intervals (engine frames included) + side 0
	const std::vector<dir_stats> e = engine_unparsed(counters_, drained_);
	dir_stats &none = s.at(FLOW_DIR_NONE);
	none.packets += e[FLOW_DIR_NONE].packets;
	none.bytes += e[FLOW_DIR_NONE].bytes;
	none.unparsed_packets += e[FLOW_DIR_NONE].unparsed_packets;
	none.unparsed_bytes += e[FLOW_DIR_NONE].unparsed_bytes;
	return s;
}

Interval Replayer::drain(uint64_t now_ns, bool timeouts, bool end, bool use_batch) {
	const std::vector<dir_stats> e = engine_unparsed(counters_, drained_);
	drained_ = counters_;
	return drain_->drain(now_ns, timeouts, end, use_batch, &e);
}

Replayer::~Replayer() = default;

const FileResult &Replayer::open_file(const std::string &path) {
	run_.reset();
	src_.reset();
	next_ = Pending{};
	auto src = std::make_unique<PcapSource>(path);
	FileResult res;
	res.linktype = src->dlt();
	res.linktype_name = PcapSource::dlt_name(res.linktype);
	res.linktype_description = PcapSource::dlt_description(res.linktype);
	LinkKind kind;
	if (!link_kind(res.linktype, kind))
		throw CaptureError(CaptureError::LinkType,
		                   (path == "-" ? "standard input" : path) + ": link type " +
		                       linktype_text(res.linktype) +
		                       " is not supported; replay reads Ethernet, Linux cooked (SLL, SLL2), "
		                       "raw IPv4/IPv6 and BSD loopback captures");
	run_ = std::make_unique<Run>(*this, kind);
	src_ = std::move(src);
	file_ = std::move(res);
	return file_;
}

bool Replayer::advance(uint64_t until_ts_ns, const ProgressFn &progress, uint64_t every) {
	if (!src_)
		return false;
	if (!every)
		every = 1 << 16;
	for (;;) {
		if (!next_.valid) {
			int rc = src_->next(next_.data, next_.caplen, next_.wire, next_.ts);
			if (rc <= 0) {
				if (rc < 0)
					file_.damage = src_->error();
				if (progress)
					progress(file_.frames, src_->size(), src_->size());
				run_.reset();
				src_.reset();
				return false;
			}
			next_.valid = true;
		}
		if (until_ts_ns != UINT64_MAX && next_.ts >= until_ts_ns)
			return true; // MAX: everything
		next_.valid = false;
		run_->frame(next_.data, next_.caplen, next_.wire, next_.ts);
		if (++file_.frames % every == 0 && progress)
			progress(file_.frames, src_->offset(), src_->size());
	}
}

FileResult Replayer::replay_file(const std::string &path, const ProgressFn &progress, uint64_t every) {
	open_file(path);
	advance(UINT64_MAX, progress, every);
	return file_;
}

void Replayer::replay_frames(int dlt, const std::vector<std::string> &frames,
                             const std::vector<uint64_t> &ts_ns, const std::vector<uint32_t> &wire_len) {
	LinkKind kind;
	if (!link_kind(dlt, kind))
		throw CaptureError(CaptureError::LinkType,
		                   "link type " + linktype_text(dlt) + " is not supported");
	if ((!ts_ns.empty() && ts_ns.size() != frames.size()) ||
	    (!wire_len.empty() && wire_len.size() != frames.size()))
		throw SysError("replay_frames: ts_ns and wire_len need one value per frame", EINVAL);
	Run run(*this, kind);
	for (size_t i = 0; i < frames.size(); ++i) {
		const std::string &f = frames[i];
		const uint32_t caplen = static_cast<uint32_t>(f.size());
		run.frame(reinterpret_cast<const uint8_t *>(f.data()), caplen,
		          wire_len.empty() ? caplen : wire_len[i], ts_ns.empty() ? 0 : ts_ns[i]);
	}
}

} // namespace pktstat
