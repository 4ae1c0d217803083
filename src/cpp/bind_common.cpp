#include "bind_common.hpp"

namespace pktstat {

// ---- dtypes derived from the compiled structs -------------------------------
#define REC_FIELD(name, member, fmt) Field{name, fmt, offsetof(flow_record, member), sizeof(flow_record::member)}
const std::vector<Field> &record_fields() {
	static const std::vector<Field> f = {
	    REC_FIELD("saddr", key.tuple.saddr, "(16,)u1"), REC_FIELD("daddr", key.tuple.daddr, "(16,)u1"),
	    REC_FIELD("sport", key.tuple.sport, "u2"),      REC_FIELD("dport", key.tuple.dport, "u2"),
	    REC_FIELD("proto", key.tuple.proto, "u1"),      REC_FIELD("dir", key.tuple.dir, "u1"),
	    REC_FIELD("ipver", key.tuple.ipver, "u1"),      REC_FIELD("kind", key.tuple.kind, "u1"),
	    REC_FIELD("ifindex", key.tuple.ifindex, "u4"),
	    REC_FIELD("pid", key.pid, "u4"),                REC_FIELD("cgroup_id", key.cgroup_id, "u8"),
	    REC_FIELD("comm", key.comm, "S16"),             REC_FIELD("packets", value.packets, "u8"),
	    REC_FIELD("bytes", value.bytes, "u8"),          REC_FIELD("first_seen", value.first_seen_ns, "M8[ns]"),
	    REC_FIELD("last_seen", value.last_seen_ns, "M8[ns]"),
	};
	return f;
}
#undef REC_FIELD

#define STAT_FIELD(m) Field{#m, "u8", offsetof(dir_stats, m), sizeof(dir_stats::m)}
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

py::dict layout_of(const std::vector<Field> &fields, size_t itemsize) {
	py::dict d;
	for (const Field &f : fields) d[f.name] = py::make_tuple(f.offset, f.size);
	d["__itemsize__"] = py::make_tuple(0, itemsize);
	return d;
}


py::str path_str(const std::string &s) {
	PyObject *o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
	if (!o) throw py::error_already_set();
	return py::reinterpret_steal<py::str>(o);
}

} // namespace pktstat
