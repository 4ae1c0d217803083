#include "bind_common.hpp"

namespace pktstat {

// ---- dtypes derived from the compiled structs -------------------------------
#define REC_FIELD(name, member, fmt)                                                                         \
	Field {                                                                                              \
		name, fmt, offsetof(flow_record, member), sizeof(flow_record::member)                        \
	}
const std::vector<Field> &record_fields() {
	static const std::vector<Field> f = {
	    REC_FIELD("saddr", key.tuple.saddr, "(16,)u1"),
	    REC_FIELD("daddr", key.tuple.daddr, "(16,)u1"),
	    REC_FIELD("sport", key.tuple.sport, "u2"),
	    REC_FIELD("dport", key.tuple.dport, "u2"),
	    REC_FIELD("proto", key.tuple.proto, "u1"),
	    REC_FIELD("dir", key.tuple.dir, "u1"),
	    REC_FIELD("ipver", key.tuple.ipver, "u1"),
	    REC_FIELD("kind", key.tuple.kind, "u1"),
	    REC_FIELD("ifindex", key.tuple.ifindex, "u4"),
	    REC_FIELD("pid", key.pid, "u4"),
	    REC_FIELD("cgroup_id", key.cgroup_id, "u8"),
	    REC_FIELD("comm", key.comm, "S16"),
	    REC_FIELD("packets", value.packets, "u8"),
	    REC_FIELD("bytes", value.bytes, "u8"),
	    REC_FIELD("first_seen", value.first_seen_ns, "M8[ns]"),
	    REC_FIELD("last_seen", value.last_seen_ns, "M8[ns]"),
	    REC_FIELD("syn_packets", value.syn_packets, "u4"),
	    REC_FIELD("fin_packets", value.fin_packets, "u4"),
	    REC_FIELD("rst_packets", value.rst_packets, "u4"),
	    REC_FIELD("tcp_flags", value.tcp_flags, "u1"),
	    REC_FIELD("app", value.app, "u1"),
	    REC_FIELD("app_tries", value.app_tries, "u1"),
	    REC_FIELD("app_empty", value.app_empty, "u1"),
	    REC_FIELD("retrans_packets", value.health.retrans_packets, "u4"),
	    REC_FIELD("rtt_samples", value.health.rtt_samples, "u4"),
	    REC_FIELD("retrans_bytes", value.health.retrans_bytes, "u8"),
	    REC_FIELD("rtt_sum", value.health.rtt_sum_ns, "m8[ns]"),
	    REC_FIELD("rtt_min", value.health.rtt_min_ns, "m8[ns]"),
	    REC_FIELD("rtt_max", value.health.rtt_max_ns, "m8[ns]"),
	};
	return f;
}
#undef REC_FIELD

#define IV_FIELD(name, member, fmt)                                                                          \
	Field {                                                                                              \
		name, fmt, offsetof(interval_record, member), sizeof(interval_record::member)                \
	}
// A flow_record's fields, then what each kind of record adds.
static std::vector<Field> record_fields_plus(size_t base, std::vector<Field> extra) {
	std::vector<Field> f;
	for (Field x : record_fields()) {
		x.offset += base;
		f.push_back(x);
	}
	f.insert(f.end(), extra.begin(), extra.end());
	return f;
}

const std::vector<Field> &interval_fields() {
	static const std::vector<Field> f = record_fields_plus(
	    offsetof(interval_record, rec),
	    {IV_FIELD("total_packets", total_packets, "u8"), IV_FIELD("total_bytes", total_bytes, "u8"),
	     IV_FIELD("flow_first_seen", flow_first_seen_ns, "M8[ns]"),
	     IV_FIELD("flow_tcp_flags", flow_tcp_flags, "u1")});
	return f;
}
#undef IV_FIELD

#define END_FIELD(name, member, fmt)                                                                         \
	Field {                                                                                              \
		name, fmt, offsetof(ended_record, member), sizeof(ended_record::member)                      \
	}
const std::vector<Field> &ended_fields() {
	static const std::vector<Field> f =
	    record_fields_plus(offsetof(ended_record, rec), {END_FIELD("delta_packets", delta_packets, "u8"),
	                                                     END_FIELD("delta_bytes", delta_bytes, "u8"),
	                                                     END_FIELD("reason", reason, "u1")});
	return f;
}
#undef END_FIELD

#define NAME_FIELD(name, member, fmt)                                                                        \
	Field {                                                                                              \
		name, fmt, offsetof(name_record, member), sizeof(name_record::member)                        \
	}
// The key's fields as a flow record's (one layout: flow_key leads both), then the name's.
const std::vector<Field> &name_fields() {
	static const std::vector<Field> f = [] {
		std::vector<Field> out;
		for (const Field &x : record_fields())
			if (x.offset < sizeof(flow_key))
				out.push_back(x);
		for (Field x : std::vector<Field>{
			 NAME_FIELD("name_kind", name.kind, "u1"), NAME_FIELD("name_len", name.len, "u1"),
			 NAME_FIELD("alpn_len", name.alpn_len, "u1"),
			 NAME_FIELD("dns_rcode", name.dns_rcode, "u1"),
			 NAME_FIELD("dns_qtype", name.dns_qtype, "u2"),
			 NAME_FIELD("dns_answers", name.dns_answers, "u2"),
			 NAME_FIELD("dns_queries", name.dns_queries, "u4"),
			 NAME_FIELD("dns_responses", name.dns_responses, "u4"),
			 NAME_FIELD("quic_version", name.quic_version, "u4"),
			 NAME_FIELD("tls_more", name.tls_more, "u1"), NAME_FIELD("quic", name.quic, "u1"),
			 NAME_FIELD("alpn", name.alpn, "(64,)u1"), NAME_FIELD("name", name.name, "(256,)u1")})
			out.push_back(x);
		return out;
	}();
	return f;
}
#undef NAME_FIELD

#define DNS_FIELD(name, member, fmt)                                                                         \
	Field {                                                                                              \
		name, fmt, offsetof(dns_name_record, member), sizeof(dns_name_record::member)                \
	}
// The key's fields as a flow record's, then the DNS answer that names the flow.
const std::vector<Field> &dns_name_fields() {
	static const std::vector<Field> f = [] {
		std::vector<Field> out;
		for (const Field &x : record_fields())
			if (x.offset < sizeof(flow_key))
				out.push_back(x);
		for (Field x : std::vector<Field>{DNS_FIELD("answer_seen_ns", answer.seen_ns, "u8"),
		                                  DNS_FIELD("answer_ttl", answer.ttl, "u4"),
		                                  DNS_FIELD("name_len", answer.len, "u1"),
		                                  DNS_FIELD("name", answer.name, "(256,)u1")})
			out.push_back(x);
		return out;
	}();
	return f;
}
#undef DNS_FIELD

#define STAT_FIELD(m)                                                                                        \
	Field {                                                                                              \
#m, "u8", offsetof(dir_stats, m), sizeof(dir_stats::m)                                       \
	}
const std::vector<Field> &stats_fields() {
	static const std::vector<Field> f = {STAT_FIELD(packets),          STAT_FIELD(bytes),
	                                     STAT_FIELD(unparsed_packets), STAT_FIELD(unparsed_bytes),
	                                     STAT_FIELD(overflow_packets), STAT_FIELD(overflow_bytes)};
	return f;
}
#undef STAT_FIELD

static py::dtype make_dtype(const std::vector<Field> &fields, size_t itemsize) {
	py::list names, formats, offsets;
	for (const Field &f : fields) {
		names.append(f.name);
		formats.append(f.format);
		offsets.append(f.offset);
	}
	return py::dtype(names, formats, offsets, static_cast<py::ssize_t>(itemsize));
}

// Built once and deliberately never freed: a static py::object would be
// released after the interpreter is gone.
py::dtype record_dtype() {
	static auto *dt = new py::dtype(make_dtype(record_fields(), sizeof(flow_record)));
	return *dt;
}

py::dtype stats_dtype() {
	static auto *dt = new py::dtype(make_dtype(stats_fields(), sizeof(dir_stats)));
	return *dt;
}

py::dtype interval_dtype() {
	static auto *dt = new py::dtype(make_dtype(interval_fields(), sizeof(interval_record)));
	return *dt;
}

py::dtype name_dtype() {
	static auto *dt = new py::dtype(make_dtype(name_fields(), sizeof(name_record)));
	return *dt;
}

py::dtype dns_name_dtype() {
	static auto *dt = new py::dtype(make_dtype(dns_name_fields(), sizeof(dns_name_record)));
	return *dt;
}

py::dtype ended_dtype() {
	static auto *dt = new py::dtype(make_dtype(ended_fields(), sizeof(ended_record)));
	return *dt;
}

PyInterval to_python(Interval &&iv) {
	PyInterval p;
	p.start_ns = iv.start_ns;
	p.end_ns = iv.end_ns;
	p.live_flows = iv.live_flows;
	p.evicted_flows = iv.evicted_flows;
	p.wait_ns = iv.wait_ns;
	p.read_ns = iv.read_ns;
	p.fold_ns = iv.fold_ns;
	p.records = to_numpy(std::move(iv.records), interval_dtype());
	p.stats = to_numpy(std::move(iv.stats), stats_dtype());
	p.ended = to_numpy(std::move(iv.ended), ended_dtype());
	p.names = to_numpy(std::move(iv.names), name_dtype());
	p.names_written = iv.names_written;
	p.names_full = iv.names_full;
	p.totals = to_numpy(std::move(iv.totals), stats_dtype());
	return p;
}

void bind_interval(py::module_ &m) {
	py::class_<PyInterval>(m, "Interval",
	                       "One drained interval of a collector's or replayer's flow table.")
	    .def_readonly("start_ns", &PyInterval::start_ns)
	    .def_readonly("end_ns", &PyInterval::end_ns)
	    .def_readonly("records", &PyInterval::records)
	    .def_readonly("stats", &PyInterval::stats)
	    .def_readonly("ended", &PyInterval::ended)
	    .def_readonly("names", &PyInterval::names)
	    .def_readonly("names_written", &PyInterval::names_written)
	    .def_readonly("names_full", &PyInterval::names_full)
	    .def_readonly("totals", &PyInterval::totals)
	    .def_readonly("live_flows", &PyInterval::live_flows)
	    .def_readonly("evicted_flows", &PyInterval::evicted_flows)
	    .def_readonly("wait_ns", &PyInterval::wait_ns)
	    .def_readonly("read_ns", &PyInterval::read_ns)
	    .def_readonly("fold_ns", &PyInterval::fold_ns);
	m.attr("interval_dtype") = interval_dtype();
	m.attr("ended_dtype") = ended_dtype();
	m.attr("name_dtype") = name_dtype();
	m.attr("dns_name_dtype") = dns_name_dtype();

	m.attr("FLOW_END_IDLE") = static_cast<int>(FLOW_END_IDLE);
	m.attr("FLOW_END_ACTIVE") = static_cast<int>(FLOW_END_ACTIVE);
	m.attr("FLOW_END_END") = static_cast<int>(FLOW_END_END);
	m.attr("FLOW_END_EVICTED") = static_cast<int>(FLOW_END_EVICTED);
}

py::dict layout_of(const std::vector<Field> &fields, size_t itemsize) {
	py::dict d;
	for (const Field &f : fields)
		d[f.name] = py::make_tuple(f.offset, f.size);
	d["__itemsize__"] = py::make_tuple(0, itemsize);
	return d;
}

py::str path_str(const std::string &s) {
	PyObject *o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
	if (!o)
		throw py::error_already_set();
	return py::reinterpret_steal<py::str>(o);
}

} // namespace pktstat
