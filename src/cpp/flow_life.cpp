#include "flow_life.hpp"

#include <algorithm>
#include <cstring>

#include "error.hpp"
#include "flow_table.hpp"

namespace pktstat {

uint64_t hash_flow_key(const flow_key &k) noexcept {
	static_assert(sizeof(flow_key) % 8 == 0, "flow_key is whole words");
	uint64_t w[sizeof(flow_key) / 8];
	std::memcpy(w, &k, sizeof(w));
	uint64_t h = 0x9e3779b97f4a7c15ULL;
	for (uint64_t x : w) {
		h ^= x;
		h *= 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 32;
	return h;
}

namespace {
// The TCP fields of a lifetime entry into a record.
template <class E> void put_tcp(flow_value &v, const E &en) {
	v.syn_packets = en.syn;
	v.fin_packets = en.fin;
	v.rst_packets = en.rst;
	v.tcp_flags = en.tcp_flags;
	v.app = en.app;
	v.app_tries = en.app_tries;
	v.app_empty = en.app_empty;
	v.health = en.health;
}
inline uint32_t tag_of(uint64_t h) {
	return static_cast<uint32_t>(h >> 32);
}
inline uint32_t idx_of(uint64_t slot) {
	return static_cast<uint32_t>(slot);
}
inline uint64_t slot_of(uint64_t h, uint32_t e) {
	return (static_cast<uint64_t>(tag_of(h)) << 32) | e;
}
} // namespace

FlowLifetime::FlowLifetime() {
	clear();
}

void FlowLifetime::set_limits(const FlowLimits &l) {
	if (l.max_flows == 0 || l.max_flows >= kNone)
		throw SysError("max_flows must be between 1 and 2^32-2", EINVAL);
	limits_ = l;
}

void FlowLifetime::clear() {
	entries_.clear();
	entries_.shrink_to_fit();
	free_ = kNone;
	slots_.assign(1024, kEmpty);
	mask_ = slots_.size() - 1;
	live_ = 0;
	evicted_ = 0;
	idle_ = act_ = List{};
}

void FlowLifetime::link_tail(List &l, uint32_t e, bool idle) {
	Entry &en = entries_[e];
	uint32_t &prev = idle ? en.idle_prev : en.act_prev;
	uint32_t &next = idle ? en.idle_next : en.act_next;
	prev = l.tail;
	next = kNone;
	if (l.tail != kNone)
		(idle ? entries_[l.tail].idle_next : entries_[l.tail].act_next) = e;
	else
		l.head = e;
	l.tail = e;
}

void FlowLifetime::unlink(List &l, uint32_t e, bool idle) {
	Entry &en = entries_[e];
	const uint32_t prev = idle ? en.idle_prev : en.act_prev;
	const uint32_t next = idle ? en.idle_next : en.act_next;
	if (prev != kNone)
		(idle ? entries_[prev].idle_next : entries_[prev].act_next) = next;
	else
		l.head = next;
	if (next != kNone)
		(idle ? entries_[next].idle_prev : entries_[next].act_prev) = prev;
	else
		l.tail = prev;
}

uint32_t FlowLifetime::find(const flow_key &k, uint64_t h) const {
	const uint32_t tag = tag_of(h);
	for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
		const uint64_t s = slots_[i];
		if (s == kEmpty)
			return kNone;
		if (static_cast<uint32_t>(s >> 32) == tag &&
		    std::memcmp(&entries_[idx_of(s)].key, &k, sizeof(k)) == 0)
			return idx_of(s);
	}
}

void FlowLifetime::grow() {
	std::vector<uint64_t> old(slots_.size() * 2, kEmpty);
	old.swap(slots_);
	mask_ = slots_.size() - 1;
	for (uint64_t s : old) {
		if (s == kEmpty)
			continue;
		uint64_t i = entries_[idx_of(s)].hash & mask_;
		while (slots_[i] != kEmpty)
			i = (i + 1) & mask_;
		slots_[i] = s;
	}
}

// Linear probing's deletion: shift later members of the cluster back so no
// probe sequence is broken (no tombstones).
void FlowLifetime::erase_slot(uint64_t h, uint32_t e) {
	uint64_t i = h & mask_;
	while (idx_of(slots_[i]) != e || slots_[i] == kEmpty)
		i = (i + 1) & mask_;
	for (uint64_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
		const uint64_t s = slots_[j];
		if (s == kEmpty)
			break;
		const uint64_t home = entries_[idx_of(s)].hash & mask_;
		// s may move to i if i lies cyclically in [home, j)
		if (((j - home) & mask_) >= ((j - i) & mask_)) {
			slots_[i] = s;
			i = j;
		}
	}
	slots_[i] = kEmpty;
}

void FlowLifetime::emit(Entry &en, uint8_t reason, std::vector<ended_record> &ended) {
	ended_record r{};
	r.rec.key = en.key;
	r.rec.value.packets = en.packets;
	r.rec.value.bytes = en.bytes;
	r.rec.value.first_seen_ns = en.first_ns;
	r.rec.value.last_seen_ns = en.last_ns;
	put_tcp(r.rec.value, en);
	r.delta_packets = en.packets - en.rep_packets;
	r.delta_bytes = en.bytes - en.rep_bytes;
	r.reason = reason;
	ended.push_back(r);
	en.rep_packets = en.packets;
	en.rep_bytes = en.bytes;
}

void FlowLifetime::retire(uint32_t e, uint8_t reason, std::vector<ended_record> &ended) {
	Entry &en = entries_[e];
	emit(en, reason, ended);
	unlink(idle_, e, true);
	unlink(act_, e, false);
	erase_slot(en.hash, e);
	en.idle_next = free_;
	free_ = e;
	--live_;
}

uint32_t FlowLifetime::insert(const flow_key &k, uint64_t h, std::vector<ended_record> &ended) {
	while (live_ >= limits_.max_flows && idle_.head != kNone) { // full: the longest idle goes early
		retire(idle_.head, FLOW_END_EVICTED, ended);
		++evicted_;
	}
	if ((live_ + 1) * 2 > slots_.size())
		grow();
	uint32_t e;
	if (free_ != kNone) {
		e = free_;
		free_ = entries_[e].idle_next;
	} else {
		e = static_cast<uint32_t>(entries_.size());
		entries_.emplace_back();
	}
	Entry &en = entries_[e];
	en = Entry{};
	en.key = k;
	en.hash = h;
	uint64_t i = h & mask_;
	while (slots_[i] != kEmpty)
		i = (i + 1) & mask_;
	slots_[i] = slot_of(h, e);
	link_tail(idle_, e, true);
	link_tail(act_, e, false);
	++live_;
	return e;
}

void FlowLifetime::update(const std::vector<flow_record> &in, std::vector<interval_record> &out,
                          std::vector<ended_record> &ended) {
	out.resize(in.size());
	if (entries_.capacity() < live_ + in.size())
		entries_.reserve(std::max(live_ + in.size(), entries_.size() * 2));
	for (size_t n = 0; n < in.size(); ++n) {
		const flow_record &r = in[n];
		const uint64_t h = hash_flow_key(r.key);
		uint32_t e = find(r.key, h);
		if (e == kNone) {
			e = insert(r.key, h, ended);
			Entry &en = entries_[e];
			en.first_ns = r.value.first_seen_ns;
			en.last_ns = r.value.last_seen_ns;
			en.rep_ns = r.value.first_seen_ns;
		} else {
			Entry &en = entries_[e];
			en.first_ns = std::min<uint64_t>(en.first_ns, r.value.first_seen_ns);
			en.last_ns = std::max<uint64_t>(en.last_ns, r.value.last_seen_ns);
			unlink(idle_, e, true);
			link_tail(idle_, e, true);
		}
		Entry &en = entries_[e];
		en.packets += r.value.packets;
		en.bytes += r.value.bytes;
		en.syn = add_count32(en.syn, r.value.syn_packets);
		en.fin = add_count32(en.fin, r.value.fin_packets);
		en.rst = add_count32(en.rst, r.value.rst_packets);
		en.tcp_flags |= r.value.tcp_flags;
		en.app = merge_app(en.app, r.value.app);
		en.app_tries = std::max(en.app_tries, r.value.app_tries);
		en.app_empty = std::max(en.app_empty, r.value.app_empty);
		add_health(en.health, r.value.health);
		interval_record &o = out[n];
		o.rec = r;
		o.rec.value.app = en.app; // the flow's label, not this interval's guess
		o.total_packets = en.packets;
		o.total_bytes = en.bytes;
		o.flow_first_seen_ns = en.first_ns;
		o.flow_tcp_flags = en.tcp_flags;
	}
}

void FlowLifetime::expire(uint64_t now, std::vector<ended_record> &ended) {
	if (limits_.idle_timeout_ns)
		while (idle_.head != kNone && entries_[idle_.head].last_ns + limits_.idle_timeout_ns <= now)
			retire(idle_.head, FLOW_END_IDLE, ended);
	if (limits_.active_timeout_ns)
		while (act_.head != kNone && entries_[act_.head].rep_ns + limits_.active_timeout_ns <= now) {
			const uint32_t e = act_.head;
			Entry &en = entries_[e];
			if (en.packets != en.rep_packets)
				emit(en, FLOW_END_ACTIVE, ended);
			en.rep_ns = now;
			unlink(act_, e, false);
			link_tail(act_, e, false);
		}
}

void FlowLifetime::retire_all(uint8_t reason, std::vector<ended_record> &ended) {
	ended.reserve(ended.size() + live_);
	while (idle_.head != kNone)
		retire(idle_.head, reason, ended);
}

void FlowLifetime::live(std::vector<flow_record> &out) const {
	out.reserve(out.size() + live_);
	for (uint32_t e = idle_.head; e != kNone; e = entries_[e].idle_next) {
		const Entry &en = entries_[e];
		flow_record r{};
		r.key = en.key;
		r.value.packets = en.packets;
		r.value.bytes = en.bytes;
		r.value.first_seen_ns = en.first_ns;
		r.value.last_seen_ns = en.last_ns;
		put_tcp(r.value, en);
		out.push_back(r);
	}
}

} // namespace pktstat
