// test_knobs.hpp - the one test seam: faults a test injects into the engine.
//
// PKTSTAT_BPF_TEST_FAULTS is a comma list, parsed here and nowhere else:
//   missing=NAME+NAME...  the probe of each named feature reports it missing,
//                         so the fallback or the error a user on an older
//                         kernel gets can be tested on this one:
//       bpf               the bpf() system call (loading fails with ENOSYS)
//       btf               the kernel's BTF (/sys/kernel/btf/vmlinux)
//       tcx               TCX links (Linux 6.6+): auto falls back to legacy tc
//       xdp_native        the driver's native XDP: auto falls back to generic
//       xdp_generic       generic (skb) XDP
//       xdp_buff_len      bpf_xdp_get_buff_len (5.18+): linear frame lengths
//       sock_tracepoints  tp_btf sock_send_length/sock_recv_length (6.3+)
//       syscall_tracepoints  the syscall tracepoints (process mode)
//       cgroup_mkdir      tp_btf cgroup_mkdir
//       map_batch         bpf_map_lookup_batch: reads iterate key by key
//       process-tracepoint, process-fentry, process-kprobe
//                         process-mode backends
//       cgroup2           no cgroup v2 mount (honoured by the Python side)
//   fail_attach_at=N      attach throws EIO at its N-th step (0 = the first),
//                         after the steps before it succeeded: the rollback
//   xdp_buff_len=0|1      XDP counts the linear part (0) or the whole frame
//                         (1) whatever the kernel has
//   progress_delay=SECONDS  the replay progress bar's delay (Python side)
// e.g. PKTSTAT_BPF_TEST_FAULTS=missing=tcx+btf,fail_attach_at=1.
//
// Read when an engine object is constructed (Skeleton's constructor: every
// collector and the Replayer open one first) and in force until the next;
// Python reads it through _core.test_faults(). An unknown name is an error.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace pktstat {

inline constexpr const char *kTestFaultsEnv = "PKTSTAT_BPF_TEST_FAULTS";

struct TestFaults {
	std::set<std::string, std::less<>> missing;
	int fail_attach_at = -1;
	std::optional<bool> xdp_buff_len;
	std::optional<double> progress_delay;

	// Throws std::invalid_argument naming the variable and the bad item.
	static TestFaults parse(std::string_view spec);
};

// Parse PKTSTAT_BPF_TEST_FAULTS now; it is in force until the next call.
std::shared_ptr<const TestFaults> load_test_faults();
// The faults in force (none before the first load).
std::shared_ptr<const TestFaults> test_faults();

// Shorthands for the fault points.
bool forced_missing(std::string_view feature);
// True at the attach step where a test asked for a failure.
bool injected_attach_fault(int step);

} // namespace pktstat
