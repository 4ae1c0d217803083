// pcap_replay_fuzz.cpp - libFuzzer target for the capture-file replay path.
//
// Each input is a capture file (pcap or pcapng). By default the target runs
// what replay runs up to the kernel, without privilege: libpcap reads the
// file through PcapSource (from a memfd, as from any file), the link type is
// mapped (link_kind), and every record becomes test-run data (plan_frame)
// exactly as Replayer::Run does. Each record is first copied to a heap block
// of exactly its captured length, so ASan catches any read past it, and the
// plan is checked: what would reach the kernel lies inside the record or the
// synthesis buffer, is at least an Ethernet header and at most max_data long.
//
// With PKTSTAT_FUZZ_KERNEL=1, as root, a real Replayer also runs each input
// through the TC program by BPF_PROG_TEST_RUN, and every frame must be
// counted exactly once: frames = flow packets + unparsed + overflow, and the
// same for bytes. A second pass steps through the file as interval streams
// do (advance() to successive bounds, idle gaps jumped) and must end with
// exactly the same counts.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "error.hpp"
#include "flow_table.hpp"
#include "pcap_source.hpp"
#include "replay.hpp"
#include "replay_frame.hpp"

using namespace pktstat;

namespace {

constexpr uint32_t kEthHlen = 14;

[[noreturn]] void fail(const char *what) {
	std::fprintf(stderr, "pcap_replay_fuzz: invariant broken: %s\n", what);
	std::abort();
}

// The input as a file: a memfd, opened by path as replay opens any file.
class MemFile {
      public:
	MemFile(const uint8_t *data, size_t size) : fd_(::memfd_create("fuzz.pcap", MFD_CLOEXEC)) {
		if (fd_ < 0)
			fail("memfd_create");
		for (size_t off = 0; off < size;) {
			ssize_t n = ::write(fd_, data + off, size - off);
			if (n <= 0)
				fail("write to the memfd");
			off += static_cast<size_t>(n);
		}
	}
	~MemFile() { ::close(fd_); }
	std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

      private:
	int fd_;
};

// Touch every byte of [p, p + n): ASan reports the first one out of bounds.
uint32_t touch(const uint8_t *p, uint32_t n) {
	uint32_t sum = 0;
	for (uint32_t i = 0; i < n; ++i)
		sum += p[i];
	return sum;
}

// A test-run limit between ETH_HLEN and a page, different from input to
// input (the kernel's is about a page minus head- and tailroom).
uint32_t max_data_for(const uint8_t *data, size_t size) {
	uint32_t h = 2166136261u; // FNV-1a over the first bytes
	for (size_t i = 0; i < size && i < 64; ++i)
		h = (h ^ data[i]) * 16777619u;
	return kEthHlen + h % 4096;
}

void plan_records(const std::string &path, uint32_t max_data) {
	std::unique_ptr<PcapSource> src;
	try {
		src = std::make_unique<PcapSource>(path);
	} catch (const CaptureError &) {
		return; // not a capture: replay refuses it with one line
	} catch (const SysError &) {
		return;
	}
	LinkKind kind;
	if (!link_kind(src->dlt(), kind))
		return; // refused: unsupported link type
	std::vector<uint8_t> buf(max_data);
	const uint8_t *data;
	uint32_t caplen, wire;
	uint64_t ts;
	while (src->next(data, caplen, wire, ts) == 1) {
		std::vector<uint8_t> rec(data, data + caplen); // exactly caplen bytes on the heap
		const uint8_t *p = rec.empty() ? nullptr : rec.data();
		std::unique_ptr<uint8_t[]> empty;
		if (!p) { // a zero-length record: still a valid, zero-size block
			empty = std::make_unique<uint8_t[]>(0);
			p = empty.get();
		}
		const FramePlan plan = plan_frame(kind, p, caplen, max_data, buf.data());
		if (plan.action != FramePlan::Run)
			continue;
		if (plan.len < kEthHlen)
			fail("less than an Ethernet header would be run");
		if (plan.len > max_data)
			fail("more than max_data would be run");
		if (plan.data == p) {
			if (kind != LinkKind::Ethernet)
				fail("a non-Ethernet record would be run as is");
			if (plan.len > caplen)
				fail("more than the record would be run");
			if (plan.clipped != (caplen > max_data))
				fail("clipped flag wrong");
		} else if (plan.data == buf.data()) {
			if (kind == LinkKind::Ethernet)
				fail("an Ethernet record was copied");
		} else {
			fail("data points outside the record and the buffer");
		}
		touch(plan.data, plan.len);
	}
}

// Root only: the real program, and the conservation check.
Replayer *kernel_replayer() {
	static Replayer *r = []() -> Replayer * {
		const char *on = std::getenv("PKTSTAT_FUZZ_KERNEL");
		if (!on || std::strcmp(on, "1") != 0)
			return nullptr;
		try {
			return new Replayer(256); // small: full tables (overflow) are part of the test
		} catch (const SysError &e) {
			std::fprintf(stderr, "pcap_replay_fuzz: PKTSTAT_FUZZ_KERNEL=1 but no Replayer: %s\n",
			             e.what());
			std::exit(1);
		}
	}();
	return r;
}

struct Totals {
	uint64_t packets = 0, bytes = 0, unparsed = 0, unparsed_bytes = 0, overflow = 0, overflow_bytes = 0;
	uint64_t flows = 0, flow_packets = 0, flow_bytes = 0;
	bool operator==(const Totals &o) const {
		return packets == o.packets && bytes == o.bytes && unparsed == o.unparsed &&
		       unparsed_bytes == o.unparsed_bytes && overflow == o.overflow &&
		       overflow_bytes == o.overflow_bytes && flows == o.flows &&
		       flow_packets == o.flow_packets && flow_bytes == o.flow_bytes;
	}
};

Totals totals_of(const Replayer &r) {
	Totals t;
	for (const dir_stats &d : r.read_stats()) {
		t.packets += d.packets;
		t.bytes += d.bytes;
		t.unparsed += d.unparsed_packets;
		t.unparsed_bytes += d.unparsed_bytes;
		t.overflow += d.overflow_packets;
		t.overflow_bytes += d.overflow_bytes;
	}
	for (const flow_record &f : read_flows(r.flows_fd(), 0)) {
		t.flows++;
		t.flow_packets += f.value.packets;
		t.flow_bytes += f.value.bytes;
	}
	return t;
}

// The stepped pass: what Replayer::intervals does in Python.
void replay_in_steps(Replayer &r, const std::string &path, uint64_t step) {
	r.clear();
	r.open_file(path);
	bool more = r.advance(0); // reads the first frame, runs nothing
	uint64_t until = more ? r.next_ts() : 0;
	while (more) {
		if (r.next_ts() >= until &&
		    r.next_ts() - until >= step) // idle: jump to the next frame's step
			until += (r.next_ts() - until) / step * step;
		until = until > UINT64_MAX - step ? UINT64_MAX : until + step; // (saturating)
		more = r.advance(until);
	}
}

void replay_in_kernel(Replayer &r, const std::string &path, uint64_t step) {
	r.clear();
	try {
		r.replay_file(path);
	} catch (const CaptureError &) {
		return;
	}
	const ReplayCounters &c = r.counters();
	if (c.frames != c.kernel_frames + c.engine_unparsed_frames)
		fail("a frame was neither run nor counted");
	const Totals t = totals_of(r);
	if (t.packets != c.frames || t.bytes != c.bytes)
		fail("the program saw other frames than were read");
	if (t.packets != t.flow_packets + t.unparsed + t.overflow)
		fail("packets not conserved");
	if (t.bytes != t.flow_bytes + t.unparsed_bytes + t.overflow_bytes)
		fail("bytes not conserved");
	const uint64_t frames = c.frames;
	replay_in_steps(r, path, step);
	if (r.counters().frames != frames)
		fail("the stepped pass read other frames");
	if (!(totals_of(r) == t))
		fail("the stepped pass counted differently");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
	MemFile file(data, size);
	const uint32_t h = max_data_for(data, size);
	plan_records(file.path(), h);
	// steps from 1 ns to ~18 min, different from input to input
	if (Replayer *r = kernel_replayer())
		replay_in_kernel(*r, file.path(), uint64_t{1} << (h % 41));
	return 0;
}
