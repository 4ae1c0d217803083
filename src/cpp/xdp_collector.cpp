#include "xdp_collector.hpp"

#include "flow_table.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>

#include "test_knobs.hpp"

namespace pktstat {
namespace {

const char *mode_name(uint32_t flags) {
	switch (flags) {
	case XDP_FLAGS_DRV_MODE:
		return "native";
	case XDP_FLAGS_SKB_MODE:
		return "generic";
	case XDP_FLAGS_HW_MODE:
		return "offload";
	default:
		return "";
	}
}

std::string prog_name(uint32_t id) {
	UniqueFd fd(bpf_prog_get_fd_by_id(id));
	if (!fd)
		return "";
	bpf_prog_info info{};
	uint32_t len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) < 0)
		return "";
	return std::string(info.name, strnlen(info.name, sizeof(info.name)));
}

} // namespace

bool xdp_kernel_has_buff_len() {
	static const bool has =
	    libbpf_probe_bpf_helper(BPF_PROG_TYPE_XDP, BPF_FUNC_xdp_get_buff_len, nullptr) == 1;
	return has && !forced_missing("xdp_buff_len");
}

XdpState xdp_query(int ifindex) {
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	check_libbpf(bpf_xdp_query(ifindex, 0, &q), "query the XDP programs of the interface");
	XdpState s;
	switch (q.attach_mode) {
	case XDP_ATTACHED_DRV:
		s.mode = "native";
		s.prog_id = q.drv_prog_id ? q.drv_prog_id : q.prog_id;
		break;
	case XDP_ATTACHED_SKB:
		s.mode = "generic";
		s.prog_id = q.skb_prog_id ? q.skb_prog_id : q.prog_id;
		break;
	case XDP_ATTACHED_HW:
		s.mode = "offload";
		s.prog_id = q.hw_prog_id ? q.hw_prog_id : q.prog_id;
		break;
	case XDP_ATTACHED_MULTI:
		s.mode = "multi";
		s.prog_id = q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id ? q.skb_prog_id : q.hw_prog_id;
		break;
	default:
		return s;
	}
	if (s.prog_id)
		s.prog_name = prog_name(s.prog_id);
	return s;
}

XdpCollector::XdpCollector(const XdpOptions &opts) : opts_(opts) {
	if (opts.max_entries == 0)
		throw SysError("max_entries must be positive", EINVAL);
	bpf_program *prog = skel_->progs.xdp_count;
	skel_->rodata->cfg_l2_proto = opts.l3_device ? htons(ETH_P_IP) : 0;
	skel_->rodata->cfg_arp = opts.arp;
	skel_->rodata->cfg_tcp_health = opts.tcp_health;
	// Offloaded programs cannot call bpf_xdp_get_buff_len; keep them linear.
	buff_len_ =
	    opts.mode != XdpMode::Offload && test_faults()->xdp_buff_len.value_or(xdp_kernel_has_buff_len());
	skel_->rodata->cfg_buff_len = buff_len_;
	if (buff_len_)
		check_libbpf(bpf_program__set_flags(prog, bpf_program__flags(prog) | BPF_F_XDP_HAS_FRAGS),
		             "set BPF_F_XDP_HAS_FRAGS");
	set_flow_table_size(skel_->obj, opts.max_entries);
	if (opts.mode == XdpMode::Offload) {
		// Offload binds the program and its maps to the device at load time.
		bpf_program__set_ifindex(prog, opts.ifindex);
		bpf_map *m;
		bpf_object__for_each_map(m, skel_->obj) bpf_map__set_ifindex(m, opts.ifindex);
	}
	skel_.load();
	epoch_offset_ns_ = monotonic_to_epoch_offset_ns();
	drain_ =
	    std::make_unique<FlowDrain>(skel_->obj, epoch_offset_ns_, true, epoch_now_ns(epoch_offset_ns_));
}

void XdpCollector::attach() {
	if (attached())
		return;
	// Never touch an interface that runs someone else's XDP program (a link
	// would refuse anyway; this names the program in the error).
	XdpState there = xdp_query(opts_.ifindex);
	if (there.prog_id)
		throw XdpBusy("the interface already has an XDP program", there);

	if (injected_attach_fault(0))
		throw SysError("attach (injected test fault)", EIO);
	const int prog_fd = bpf_program__fd(skel_->progs.xdp_count);
	auto link = [&](uint32_t flags) {
		// tests: a driver without native XDP, a kernel without generic XDP
		if ((flags == XDP_FLAGS_DRV_MODE && forced_missing("xdp_native")) ||
		    (flags == XDP_FLAGS_SKB_MODE && forced_missing("xdp_generic")))
			return -EOPNOTSUPP;
		LIBBPF_OPTS(bpf_link_create_opts, o, .flags = flags);
		return bpf_link_create(prog_fd, opts_.ifindex, BPF_XDP, &o);
	};
	auto fail = [&](int rc, uint32_t flags) {
		if (rc == -EBUSY || rc == -EEXIST) { // someone attached meanwhile
			XdpState now = xdp_query(opts_.ifindex);
			if (now.prog_id)
				throw XdpBusy("the interface already has an XDP program", now);
		}
		throw SysError(std::string("attach XDP in ") + mode_name(flags) + " mode", -rc);
	};

	uint32_t flags = 0;
	switch (opts_.mode) {
	case XdpMode::Native:
		flags = XDP_FLAGS_DRV_MODE;
		break;
	case XdpMode::Generic:
		flags = XDP_FLAGS_SKB_MODE;
		break;
	case XdpMode::Offload:
		flags = XDP_FLAGS_HW_MODE;
		break;
	case XdpMode::Auto: {
		int fd = link(XDP_FLAGS_DRV_MODE);
		if (fd >= 0) {
			native_refusal_.clear();
			return linked(fd, XDP_FLAGS_DRV_MODE);
		}
		if (fd == -EBUSY || fd == -EEXIST || fd == -EPERM || fd == -EACCES)
			fail(fd, XDP_FLAGS_DRV_MODE);
		native_refusal_ = std::strerror(-fd); // the driver cannot: generic XDP works everywhere
		flags = XDP_FLAGS_SKB_MODE;
		break;
	}
	}
	int fd = link(flags);
	if (fd < 0)
		fail(fd, flags);
	linked(fd, flags);
}

void XdpCollector::linked(int fd, uint32_t flags) {
	link_ = UniqueFd(fd);
	link_flags_ = flags;
	if (injected_attach_fault(1)) { // tests: a failure after the link was made rolls it back
		detach();
		throw SysError("attach (injected test fault)", EIO);
	}
}

void XdpCollector::detach() noexcept {
	link_.reset();
	link_flags_ = 0;
}

std::string XdpCollector::attach_path() const {
	if (!link_)
		return "";
	return std::string("xdp-") + mode_name(link_flags_);
}

} // namespace pktstat
