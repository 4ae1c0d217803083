// kernel_btf.hpp - what the running kernel's BTF (/sys/kernel/btf/vmlinux)
// says it has: BTF tracepoints (tp_btf) and their arguments, functions
// (fentry targets). One prober for every mode that needs BTF.
#pragma once

#include <bpf/btf.h>

namespace pktstat {

class KernelBtf {
      public:
	KernelBtf(); // loads vmlinux BTF; none where the kernel lacks it (or a test says so: "btf")
	~KernelBtf();
	KernelBtf(const KernelBtf &) = delete;
	KernelBtf &operator=(const KernelBtf &) = delete;

	explicit operator bool() const noexcept { return btf_ != nullptr; }
	// Throws FeatureMissing naming `mode` ("cgroup mode") where there is no BTF.
	void require(const char *mode) const;

	bool has_tracepoint(const char *name) const { return tracepoint_args(name) >= 0; }
	// Arguments of a BTF tracepoint (without the leading context), -1 if absent.
	int tracepoint_args(const char *name) const;
	bool has_function(const char *name) const;

      private:
	btf *btf_;
};

} // namespace pktstat
