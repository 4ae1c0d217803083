#include "drop_watcher.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstring>

#include "error.hpp"
#include "kernel_btf.hpp"
#include "test_knobs.hpp"

namespace pktstat {
namespace {

std::string strip_prefix(const char *name) {
	for (const char *p : {"SKB_DROP_REASON_", "SKB_"})
		if (std::strncmp(name, p, std::strlen(p)) == 0)
			return name + std::strlen(p);
	return name;
}

// Iterate a map whose keys are K: every (key, value) pair.
template <class K, class V, class F> void each(int fd, F f) {
	K key{}, next{};
	V value{};
	const K *prev = nullptr;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &value) == 0)
			f(next, value);
		key = next;
		prev = &key;
	}
}

} // namespace

std::map<uint32_t, std::string> kernel_drop_reasons() {
	const char *missing =
	    "--drops needs the kernel's drop reasons (the kfree_skb tracepoint with its reason, "
	    "Linux 5.17+, and enum skb_drop_reason in the kernel's BTF)";
	KernelBtf kbtf;
	if (!kbtf)
		throw FeatureMissing(std::string(missing) +
		                     "; this kernel has no BTF (/sys/kernel/btf/vmlinux)");
	if (forced_missing("drop_reason") || kbtf.tracepoint_args("kfree_skb") < 3)
		throw FeatureMissing(std::string(missing) +
		                     "; this kernel's kfree_skb tracepoint has no reason");
	btf *vmlinux = btf__load_vmlinux_btf();
	if (libbpf_get_error(vmlinux))
		throw FeatureMissing(missing);
	std::map<uint32_t, std::string> names;
	const int id = btf__find_by_name_kind(vmlinux, "skb_drop_reason", BTF_KIND_ENUM);
	if (id > 0) {
		const btf_type *t = btf__type_by_id(vmlinux, id);
		const struct btf_enum *e = btf_enum(t);
		for (int i = 0; i < btf_vlen(t); ++i, ++e)
			names[static_cast<uint32_t>(e->val)] =
			    strip_prefix(btf__name_by_offset(vmlinux, e->name_off));
	}
	btf__free(vmlinux);
	if (names.empty())
		throw FeatureMissing(std::string(missing) +
		                     "; this kernel's BTF has no enum skb_drop_reason");
	return names;
}

DropWatcher::DropWatcher(const DropOptions &opts) : opts_(opts), reasons_(kernel_drop_reasons()) {
	auto *ro = skel_->rodata;
	for (const auto &[value, name] : reasons_) {
		if (name == "NOT_DROPPED_YET")
			ro->cfg_reason_not_dropped = value;
		if (name == "CONSUMED")
			ro->cfg_reason_consumed = value;
	}
	ro->cfg_ifindex = opts_.ifindex;
	ro->cfg_netns = opts_.netns;
	check_libbpf(bpf_map__set_max_entries(skel_->maps.drops, opts_.max_entries), "size the drop map");
	skel_.load();
}

void DropWatcher::attach() {
	if (link_)
		return;
	bpf_link *l = bpf_program__attach(skel_->progs.drops_kfree_skb);
	if (!l)
		throw SysError("attach tp_btf/kfree_skb", errno ? errno : EINVAL);
	link_.reset(l);
}

void DropWatcher::detach() noexcept {
	link_.reset();
}

uint32_t DropWatcher::prog_id() const {
	bpf_prog_info info{};
	uint32_t len = sizeof(info);
	check(bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.drops_kfree_skb), &info, &len),
	      "read the drop program's info");
	return info.id;
}

std::vector<DropEntry> DropWatcher::read_flows() const {
	std::vector<DropEntry> out;
	each<drop_key, drop_value>(bpf_map__fd(skel_->maps.drops),
	                           [&](const drop_key &k, const drop_value &v) {
					   out.push_back({k, v});
				   });
	return out;
}

std::vector<std::pair<uint32_t, drop_value>> DropWatcher::read_reasons() const {
	std::vector<std::pair<uint32_t, drop_value>> out;
	each<uint32_t, drop_value>(bpf_map__fd(skel_->maps.reasons),
	                           [&](uint32_t k, const drop_value &v) { out.emplace_back(k, v); });
	return out;
}

drop_stats DropWatcher::read_stats() const {
	drop_stats s{};
	const uint32_t zero = 0;
	check(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.drop_stats), &zero, &s), "read the drop counters");
	return s;
}

} // namespace pktstat
