// test_knobs.hpp - simulated missing kernel features, for tests only.
//
// PKTSTAT_BPF_TEST_FORCE_MISSING=tcx,xdp_native,... makes the engine's probe
// for each named feature report it missing, so the fallback or the error a
// user on an older kernel gets can be tested on this one. The probes that
// honour it (see docs/testing.md, "Failure injection"):
//   bpf               the bpf() system call (loading fails with ENOSYS)
//   btf               the kernel's BTF (/sys/kernel/btf/vmlinux; cgroup mode)
//   tcx               TCX links (Linux 6.6+): auto falls back to legacy tc
//   xdp_native        the driver's native XDP: auto falls back to generic
//   xdp_generic       generic (skb) XDP
//   xdp_buff_len      bpf_xdp_get_buff_len (5.18+): linear frame lengths
//   sock_tracepoints  tp_btf sock_send_length/sock_recv_length (6.3+)
//   cgroup_mkdir      tp_btf cgroup_mkdir
//   map_batch         bpf_map_lookup_batch: reads iterate key by key
//   process-tracepoint, process-fentry, process-kprobe
//                     process-mode backends (passed to the engine by the
//                     Python side at each load, so a test can change them)
// (cgroup2, no cgroup v2 mount, is simulated on the Python side.)
#pragma once

#include <string_view>

namespace pktstat {

inline constexpr const char *kForceMissingEnv = "PKTSTAT_BPF_TEST_FORCE_MISSING";

// True if `feature` is listed in PKTSTAT_BPF_TEST_FORCE_MISSING (read once).
bool forced_missing(std::string_view feature);

} // namespace pktstat
