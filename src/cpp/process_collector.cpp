#include "process_collector.hpp"

#include "flow_table.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "error.hpp"
#include "kernel_btf.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

// What one backend loads (program names in process.bpf.c) and needs.
struct BackendSpec {
	ProcessBackend id;
	std::vector<const char *> progs;
};

const BackendSpec kTracepoint{ProcessBackend::Tracepoint,
                              {"proc_tp_send", "proc_tp_recv", "proc_tp_consume" /* + the send syscalls' */}};
const BackendSpec kFentry{ProcessBackend::Fentry,
                          {"proc_fe_send4", "proc_fx_send4", "proc_fe_send6", "proc_fx_send6",
                           "proc_fx_recv4", "proc_fx_recv6", "proc_fx_recv_common", "proc_fe_consume_udp",
                           "proc_fe_free_datagram"}};
const BackendSpec kKprobe{ProcessBackend::Kprobe,
                          {"proc_kp_send4", "proc_krp_send4", "proc_kp_send6", "proc_krp_send6",
                           "proc_kp_recv4", "proc_krp_recv4", "proc_kp_recv6", "proc_krp_recv6",
                           "proc_kp_recv_common", "proc_krp_recv_common", "proc_kp_consume_udp",
                           "proc_kp_free_datagram"}};

// The kernel functions the fentry and kprobe backends hook.
const char *const kHookedFunctions[] = {"inet_sendmsg",     "inet6_sendmsg",       "inet_recvmsg",
                                        "inet6_recvmsg",    "sock_common_recvmsg", "skb_consume_udp",
                                        "skb_free_datagram"};

bool file_exists(const char *path) {
	return ::access(path, F_OK) == 0;
}

// Can libbpf attach the syscall tracepoints (it looks in debugfs's tracing
// directory where one exists, else in tracefs)?
bool syscall_tracepoints_visible() {
	const char *root =
	    file_exists("/sys/kernel/debug/tracing") ? "/sys/kernel/debug/tracing" : "/sys/kernel/tracing";
	for (const char *sc : {"sendto", "sendmsg", "sendmmsg"})
		if (!file_exists((std::string(root) + "/events/syscalls/sys_enter_" + sc + "/id").c_str()))
			return false;
	return !forced_missing("syscall_tracepoints");
}

bool kernel_has_kprobes() {
	return file_exists("/sys/bus/event_source/devices/kprobe/type") ||
	       file_exists("/sys/kernel/tracing/kprobe_events") ||
	       file_exists("/sys/kernel/debug/tracing/kprobe_events");
}

bool kallsyms_has_all(const char *const *names, size_t n) {
	std::ifstream in("/proc/kallsyms");
	std::vector<bool> seen(n);
	size_t left = n;
	std::string line;
	while (left && std::getline(in, line)) {
		size_t sp = line.rfind(' ');
		if (sp == std::string::npos)
			continue;
		std::string sym = line.substr(sp + 1);
		size_t tab = sym.find('\t'); // module symbols: "name\t[module]"
		if (tab != std::string::npos)
			sym.resize(tab);
		for (size_t i = 0; i < n; ++i)
			if (!seen[i] && sym == names[i]) {
				seen[i] = true;
				--left;
			}
	}
	return left == 0;
}

// Does this process hold every capability process mode needs: CAP_BPF,
// CAP_PERFMON (tracepoints) and CAP_NET_ADMIN (the cgroup recvmsg hooks), or
// CAP_SYS_ADMIN, which stands for all three? If not, a refusal (EPERM) is a
// matter of privilege (exit 77), not of a kernel feature (69).
bool privileged() {
	std::ifstream in("/proc/self/status");
	std::string line;
	while (std::getline(in, line)) {
		if (line.rfind("CapEff:", 0) != 0)
			continue;
		const uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
		auto has = [caps](int cap) {
			return (caps >> cap & 1) || (caps >> 21 & 1);
		};                                    // 21: CAP_SYS_ADMIN
		return has(39) && has(38) && has(12); // CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
	}
	return ::geteuid() == 0;
}

const BackendSpec &spec_of(ProcessBackend b) {
	switch (b) {
	case ProcessBackend::Fentry:
		return kFentry;
	case ProcessBackend::Kprobe:
		return kKprobe;
	default:
		return kTracepoint;
	}
}

// Why `b` cannot work here, or "" if it may.
std::string unusable(ProcessBackend b, const KernelBtf &btf) {
	if (forced_missing(std::string("process-") + backend_name(b)))
		return "disabled for a test (PKTSTAT_BPF_TEST_FAULTS)";
	for (const char *tp : {"tcp_retransmit_skb", "inet_sock_set_state"}) // every backend's
		if (!btf.has_tracepoint(tp))
			return std::string("the kernel has no tracepoint ") + tp;
	switch (b) {
	case ProcessBackend::Tracepoint:
		for (const char *tp : {"sock_send_length", "sock_recv_length", "consume_skb", "sys_enter"})
			if (!btf.has_tracepoint(tp))
				return std::string("the kernel has no tracepoint ") + tp +
				       (std::strncmp(tp, "sock_", 5) == 0 ? " (Linux 6.3+)" : "");
		return "";
	case ProcessBackend::Fentry:
		for (const char *f : kHookedFunctions)
			if (!btf.has_function(f))
				return std::string("the kernel's BTF has no function ") + f;
		return "";
	case ProcessBackend::Kprobe:
		if (!kernel_has_kprobes())
			return "the kernel has no kprobes (CONFIG_KPROBES)";
		if (!kallsyms_has_all(kHookedFunctions, sizeof(kHookedFunctions) / sizeof(*kHookedFunctions)))
			return "a hooked function is missing from /proc/kallsyms";
		return "";
	default:
		return "not a backend";
	}
}

} // namespace

const char *backend_name(ProcessBackend b) {
	switch (b) {
	case ProcessBackend::Tracepoint:
		return "tracepoint";
	case ProcessBackend::Fentry:
		return "fentry";
	case ProcessBackend::Kprobe:
		return "kprobe";
	default:
		return "auto";
	}
}

ProcessCollector::ProcessCollector(const ProcessOptions &opts)
    : opts_(opts), cgroups_(opts.cgroup_mount, "/", opts.hier_root, opts.path_cache) {
	if (opts.max_entries == 0 || opts.owner_entries == 0)
		throw SysError("map sizes must be positive", EINVAL);
	const KernelBtf btf;
	btf.require("process mode");
	const bool has_mkdir_tp = btf.has_tracepoint("cgroup_mkdir");
	const int retrans_args = btf.tracepoint_args("tcp_retransmit_skb");

	std::vector<ProcessBackend> order;
	if (opts.backend == ProcessBackend::Auto)
		order = {ProcessBackend::Tracepoint, ProcessBackend::Fentry, ProcessBackend::Kprobe};
	else
		order = {opts.backend};
	const bool priv = privileged();
	bool denied = false;

	for (ProcessBackend b : order) {
		std::string why = unusable(b, btf);
		if (!why.empty()) {
			refused_.emplace_back(backend_name(b), why);
			continue;
		}
		auto skel = std::make_unique<Skeleton<process_bpf>>();
		bpf_program *p;
		bpf_object__for_each_program(p, (*skel)->obj) bpf_program__set_autoload(p, false);
		std::vector<const char *> progs = spec_of(b).progs;
		progs.push_back(retrans_args >= 3 ? "proc_tp_retrans_err" : "proc_tp_retrans");
		progs.push_back("proc_tp_state");
		if (b == ProcessBackend::Tracepoint) {
			// the send syscalls' arguments: through their own tracepoints where
			// tracefs shows them, else a check at every system call's entry
			if (syscall_tracepoints_visible()) {
				progs.push_back("proc_tp_sendto");
				progs.push_back("proc_tp_sendmsg");
				progs.push_back("proc_tp_sendmmsg");
			} else {
				progs.push_back("proc_tp_sys_enter");
			}
			if (!opts.cgroup_mount.empty()) { // sources of datagrams whose receiver asks for them
				progs.push_back("proc_tp_recvmsg4");
				progs.push_back("proc_tp_recvmsg6");
			}
		}
		if (has_mkdir_tp)
			progs.push_back("proc_cgroup_mkdir");
		for (const char *name : progs) {
			bpf_program *prog = bpf_object__find_program_by_name((*skel)->obj, name);
			if (!prog)
				throw SysError(std::string("BPF program ") + name + " is missing", ENOENT);
			bpf_program__set_autoload(prog, true);
		}
		(*skel)->rodata->cfg_dfl_hierarchy = 0;
		(*skel)->rodata->cfg_recvmsg_hooks =
		    b == ProcessBackend::Tracepoint && !opts.cgroup_mount.empty();
		set_flow_table_size((*skel)->obj, opts.max_entries);
		check_libbpf(bpf_map__set_max_entries((*skel)->maps.process_owners, opts.owner_entries),
		             "set owner map size");
		try {
			skel->load();
		} catch (const SysError &e) {
			if (e.err() == ENOSYS)
				throw; // no bpf() at all
			if (e.err() == EPERM && !priv)
				denied = true;
			refused_.emplace_back(backend_name(b),
			                      std::string("the kernel refused its programs (") +
			                          std::strerror(e.err()) + ")");
			continue;
		}
		skel_ = std::move(skel);
		backend_ = b;
		break;
	}
	if (!skel_) {
		if (denied)
			throw SysError("load the process-mode programs", EPERM);
		if (opts.backend != ProcessBackend::Auto)
			throw FeatureMissing(std::string("--process-backend ") + backend_name(opts.backend) +
			                     " cannot run on this kernel: " + refused_.front().second);
		std::string msg = "no process-mode backend works on this kernel (";
		for (size_t i = 0; i < refused_.size(); ++i)
			msg += (i ? "; " : "") + refused_[i].first + ": " + refused_[i].second;
		throw FeatureMissing(msg + "); see README 'Process mode'");
	}
	epoch_offset_ns_ = monotonic_to_epoch_offset_ns();
	drain_ = std::make_unique<FlowDrain>(skel_->get()->obj, epoch_offset_ns_, true,
	                                     epoch_now_ns(epoch_offset_ns_));
	cgroups_.listen(bpf_map__fd(skel_->get()->maps.cgroup_events));
}

ProcessCollector::~ProcessCollector() {
	detach();
}

void ProcessCollector::attach() {
	if (attached())
		return;
	int step = 0;
	try {
		bpf_program *p;
		bpf_object__for_each_program(p, skel_->get()->obj) {
			if (!bpf_program__autoload(p))
				continue;
			const bool on_cgroup = bpf_program__type(p) == BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
			if (on_cgroup && !cgroup_fd_) {
				cgroup_fd_ = UniqueFd(
				    ::open(opts_.cgroup_mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
				if (!cgroup_fd_)
					throw SysError("open cgroup " + opts_.cgroup_mount, errno);
			}
			bpf_link *l = on_cgroup ? bpf_program__attach_cgroup(p, cgroup_fd_.get())
			                        : bpf_program__attach(p);
			if (injected_attach_fault(step++)) {
				bpf_link__destroy(l);
				throw SysError("attach (injected test fault)", EIO);
			}
			if (!l)
				throw SysError(std::string("attach ") + bpf_program__section_name(p),
				               errno ? errno : EINVAL);
			links_.emplace_back(l);
		}
		// cgroups that exist now; later ones come as cgroup_mkdir records
		if (!opts_.cgroup_mount.empty() && !scanned_) {
			cgroups_.scan();
			scanned_ = true;
		}
	} catch (...) {
		detach();
		throw;
	}
}

void ProcessCollector::detach() noexcept {
	while (!links_.empty())
		links_.pop_back();
}

std::string ProcessCollector::attach_path() const {
	return links_.empty() ? std::string() : backend_name(backend_);
}

std::vector<std::string> ProcessCollector::hooks() const {
	std::vector<std::string> out;
	bpf_program *p;
	bpf_object__for_each_program(p, skel_->get()->obj) if (bpf_program__autoload(p))
	    out.emplace_back(bpf_program__section_name(p));
	return out;
}

std::vector<uint64_t> ProcessCollector::proc_stats() const {
	const int ncpu = possible_cpus();
	std::vector<uint64_t> per_cpu(ncpu), out(PROC_STAT_NR);
	const int fd = bpf_map__fd(skel_->get()->maps.proc_stats);
	for (uint32_t i = 0; i < PROC_STAT_NR; ++i) {
		check_libbpf(bpf_map_lookup_elem(fd, &i, per_cpu.data()), "read process-mode counters");
		for (uint64_t v : per_cpu)
			out[i] += v;
	}
	return out;
}

std::unordered_map<uint64_t, std::string>
ProcessCollector::resolve_cgroups(const std::vector<uint64_t> &ids) {
	if (!opts_.cgroup_mount.empty())
		return cgroups_.resolve(ids);
	std::unordered_map<uint64_t, std::string> out;
	for (uint64_t id : ids)
		out[id] = "";
	return out;
}

} // namespace pktstat
