#include "tc_collector.hpp"

#include <arpa/inet.h>
#include <linux/if_ether.h>

#include "flow_table.hpp"

namespace pktstat {

TcCollector::TcCollector(const TcOptions &opts) : opts_(opts) {
	if (opts.max_entries == 0)
		throw SysError("max_entries must be positive", EINVAL);
	skel_->rodata->cfg_l2_proto = opts.l3_device ? htons(ETH_P_IP) : 0;
	skel_->rodata->cfg_arp = opts.arp;
	skel_->rodata->cfg_tcp_health = opts.tcp_health;
	set_flow_table_size(skel_->obj, opts.max_entries);
	skel_.load();
	epoch_offset_ns_ = monotonic_to_epoch_offset_ns();
	drain_ =
	    std::make_unique<FlowDrain>(skel_->obj, epoch_offset_ns_, true, epoch_now_ns(epoch_offset_ns_));
}

void TcCollector::attach() {
	if (attached())
		return;
	const std::pair<TcDir, bpf_program *> plan[] = {{TcDir::Ingress, skel_->progs.tc_ingress},
	                                                {TcDir::Egress, skel_->progs.tc_egress}};
	try {
		int i = 0;
		for (const auto &[dir, prog] : plan) {
			if (injected_attach_fault(i++))
				throw SysError("attach (injected test fault)", EIO);
			// Once the first direction went legacy, keep the second on the same path.
			TcAttachMode mode = opts_.mode;
			if (!links_.empty() && !links_.front().second.is_tcx())
				mode = TcAttachMode::Legacy;
			links_.emplace_back(
			    dir, attach_tc(bpf_program__fd(prog), opts_.ifindex, dir, mode, qdisc_));
		}
		if (qdisc_) { // legacy filters outlive us: record them for the run after us, should we die
			std::vector<LegacyFilterId> ids;
			for (const auto &[dir, att] : links_) {
				const auto &f = std::get<std::unique_ptr<LegacyTcFilter>>(att.owner);
				ids.push_back({dir, f->handle(), f->priority(), f->prog_id()});
			}
			record_ = std::make_unique<LegacyRecord>(qdisc_->netns(), opts_.ifindex, ids);
		}
	} catch (...) {
		detach();
		throw;
	}
}

void TcCollector::detach() noexcept {
	while (!links_.empty())
		links_.pop_back(); // egress first, then ingress
	qdisc_.reset();            // removes the qdisc if we made it and it is empty
	record_.reset();           // nothing of ours left to undo
}

std::string TcCollector::attach_path() const {
	return links_.empty() ? std::string() : links_.front().second.describe();
}

std::vector<LegacyFilterInfo> TcCollector::legacy_filters() const {
	std::vector<LegacyFilterInfo> out;
	for (const auto &[dir, att] : links_) {
		if (att.is_tcx())
			continue;
		const auto &f = std::get<std::unique_ptr<LegacyTcFilter>>(att.owner);
		out.push_back(
		    {dir == TcDir::Ingress ? "ingress" : "egress", f->handle(), f->priority(), f->prog_id()});
	}
	return out;
}

} // namespace pktstat
