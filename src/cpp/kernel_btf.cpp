#include "kernel_btf.hpp"

#include <bpf/libbpf.h>

#include <string>

#include "error.hpp"
#include "test_knobs.hpp"

namespace pktstat {

KernelBtf::KernelBtf() : btf_(forced_missing("btf") ? nullptr : btf__load_vmlinux_btf()) {
	if (libbpf_get_error(btf_))
		btf_ = nullptr;
}

KernelBtf::~KernelBtf() {
	btf__free(btf_);
}

void KernelBtf::require(const char *mode) const {
	if (!btf_)
		throw FeatureMissing(std::string(mode) +
		                     " needs the kernel's BTF (/sys/kernel/btf/vmlinux, "
		                     "CONFIG_DEBUG_INFO_BTF=y), which this kernel does not provide");
}

int KernelBtf::tracepoint_args(const char *name) const {
	if (!btf_)
		return -1;
	const std::string type = std::string("btf_trace_") + name;
	int id = btf__find_by_name_kind(btf_, type.c_str(), BTF_KIND_TYPEDEF);
	if (id <= 0)
		return -1;
	const btf_type *t = btf__type_by_id(btf_, id); // typedef -> pointer -> func proto
	for (int hops = 0; t && hops < 4 && !btf_is_func_proto(t); ++hops)
		t = btf__type_by_id(btf_, t->type);
	return t && btf_is_func_proto(t) ? static_cast<int>(btf_vlen(t)) - 1 : -1;
}

bool KernelBtf::has_function(const char *name) const {
	return btf_ && btf__find_by_name_kind(btf_, name, BTF_KIND_FUNC) > 0;
}

} // namespace pktstat
