// bindings.cpp - the pybind11 module pktstat_bpf._core (private; the public
// API is the Python package). Records cross into Python once, as a NumPy
// structured array that owns the engine's buffer (no copy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "error.hpp"
#include "flow.h"
#include "flow_table.hpp"
#include "tc_collector.hpp"

namespace py = pybind11;
using namespace pktstat;

namespace {

// ---- libbpf log -> Python logging ("pktstat_bpf.libbpf") --------------------
int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list args) {
	char buf[2048];
	int n = std::vsnprintf(buf, sizeof(buf), fmt, args);
	if (n <= 0) return n;
	std::string msg(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
	while (!msg.empty() && msg.back() == '\n') msg.pop_back();
	if (!Py_IsInitialized() || msg.empty()) return n;
	py::gil_scoped_acquire gil;
	try {
		static const int levels[] = {30 /*WARN*/, 20 /*INFO*/, 10 /*DEBUG*/};
		py::module_::import("logging").attr("getLogger")("pktstat_bpf.libbpf").attr("log")(levels[level], msg);
	} catch (py::error_already_set &e) {
		e.discard_as_unraisable(__func__);
	}
	return n;
}

// ---- dtypes derived from the compiled structs -------------------------------
struct Field {
	const char *name;
	const char *format;
	size_t offset;
	size_t size;
};

#define REC_FIELD(name, member, fmt) Field{name, fmt, offsetof(flow_record, member), sizeof(flow_record::member)}
const std::vector<Field> &record_fields() {
	static const std::vector<Field> f = {
	    REC_FIELD("saddr", key.tuple.saddr, "(16,)u1"), REC_FIELD("daddr", key.tuple.daddr, "(16,)u1"),
	    REC_FIELD("sport", key.tuple.sport, "u2"),      REC_FIELD("dport", key.tuple.dport, "u2"),
	    REC_FIELD("proto", key.tuple.proto, "u1"),      REC_FIELD("dir", key.tuple.dir, "u1"),
	    REC_FIELD("ipver", key.tuple.ipver, "u1"),      REC_FIELD("ifindex", key.tuple.ifindex, "u4"),
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

py::dtype make_dtype(const std::vector<Field> &fields, size_t itemsize) {
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

// Hand a vector to NumPy without copying: the capsule owns it.
template <class T> py::array to_numpy(std::vector<T> &&v, const py::dtype &dt) {
	auto *owned = new std::vector<T>(std::move(v)); // freed by the capsule
	py::capsule base(owned, [](void *p) { delete static_cast<std::vector<T> *>(p); });
	return py::array(dt, {static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
	                 owned->data(), base);
}

py::dict layout(const std::vector<Field> &fields, size_t itemsize) {
	py::dict d;
	for (const Field &f : fields) d[f.name] = py::make_tuple(f.offset, f.size);
	d["__itemsize__"] = py::make_tuple(0, itemsize);
	return d;
}

// A record with a distinct value in every field, filled through the C struct:
// lets a test prove the NumPy dtype decodes what C++ wrote.
py::bytes test_record() {
	flow_record r{};
	for (int i = 0; i < 16; ++i) {
		r.key.tuple.saddr[i] = static_cast<__u8>(i + 1);
		r.key.tuple.daddr[i] = static_cast<__u8>(0xf0 - i);
	}
	r.key.tuple.sport = 0x1234;
	r.key.tuple.dport = 0xabcd;
	r.key.tuple.proto = 17;
	r.key.tuple.dir = FLOW_DIR_EGRESS;
	r.key.tuple.ipver = 6;
	r.key.tuple.ifindex = 0x01020304;
	r.key.pid = 0x0badcafe;
	r.key.cgroup_id = 0x1122334455667788ULL;
	std::memcpy(r.key.comm, "comm-0123456789", 16);
	r.value.packets = 0x0102030405060708ULL;
	r.value.bytes = 0x1112131415161718ULL;
	r.value.first_seen_ns = 1700000000123456789ULL;
	r.value.last_seen_ns = 1700000001987654321ULL;
	return py::bytes(reinterpret_cast<const char *>(&r), sizeof(r));
}

TcAttachMode parse_mode(const std::string &m) {
	if (m == "auto") return TcAttachMode::Auto;
	if (m == "tcx") return TcAttachMode::Tcx;
	if (m == "legacy") return TcAttachMode::Legacy;
	throw py::value_error("tc attach mode must be auto, tcx or legacy, not " + m);
}

} // namespace

PYBIND11_MODULE(_core, m) {
	m.doc() = "pktstat-bpf engine (private: use the pktstat_bpf package)";
	libbpf_set_print(libbpf_log);

	// SysError -> OSError subclass chosen by errno (PermissionError for EPERM,
	// FileNotFoundError for ENOENT ...); ENODEV -> LookupError.
	py::register_exception_translator([](std::exception_ptr p) {
		try {
			if (p) std::rethrow_exception(p);
		} catch (const SysError &e) {
			if (e.err() == ENODEV) {
				PyErr_SetString(PyExc_LookupError, e.what());
				return;
			}
			py::object exc = py::reinterpret_steal<py::object>(
			    PyObject_CallFunction(PyExc_OSError, "is", e.err(), e.what()));
			if (!exc) return; // Python error already set
			PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc.ptr())), exc.ptr());
		}
	});

	m.attr("record_dtype") = record_dtype();
	m.attr("stats_dtype") = stats_dtype();
	m.def("record_layout", [] { return layout(record_fields(), sizeof(flow_record)); },
	      "Offsets and sizes of flow_record fields, as compiled.");
	m.def("stats_layout", [] { return layout(stats_fields(), sizeof(dir_stats)); });
	m.def("_test_record", &test_record);
	m.def("libbpf_version", [] { return std::string(libbpf_version_string()); });
	m.def("possible_cpus", &possible_cpus);
	m.attr("FLOW_DIR_INGRESS") = static_cast<int>(FLOW_DIR_INGRESS);
	m.attr("FLOW_DIR_EGRESS") = static_cast<int>(FLOW_DIR_EGRESS);
	m.attr("FLOW_DIR_NONE") = static_cast<int>(FLOW_DIR_NONE);

	m.def("clsact_has_filters", &clsact_has_filters, py::arg("ifindex"));
	m.def(
	    "remove_stale_filter",
	    [](int ifindex, const std::string &dir, uint32_t handle, uint32_t prio, uint32_t prog_id) {
		    return remove_stale_filter(ifindex, dir == "ingress" ? TcDir::Ingress : TcDir::Egress, handle, prio,
		                               prog_id);
	    },
	    py::arg("ifindex"), py::arg("direction"), py::arg("handle"), py::arg("priority"), py::arg("prog_id"));
	m.def("remove_clsact_if_empty", &remove_clsact_if_empty, py::arg("ifindex"));

	py::class_<TcCollector>(m, "TcCollector")
	    .def(py::init([](int ifindex, uint32_t max_entries, const std::string &mode, bool l3_device,
	                     int fail_attach_at) {
		         TcOptions o;
		         o.ifindex = ifindex;
		         o.max_entries = max_entries;
		         o.mode = parse_mode(mode);
		         o.l3_device = l3_device;
		         o.fail_attach_at = fail_attach_at;
		         py::gil_scoped_release nogil;
		         return std::make_unique<TcCollector>(o);
	         }),
	         py::arg("ifindex"), py::arg("max_entries") = 65536, py::arg("attach") = "auto",
	         py::arg("l3_device") = false, py::arg("_fail_attach_at") = -1)
	    .def("attach", &TcCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &TcCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &TcCollector::attached)
	    .def_property_readonly("attach_path", &TcCollector::attach_path)
	    .def_property_readonly("created_qdisc", &TcCollector::created_qdisc)
	    .def_property_readonly("max_entries", [](const TcCollector &c) { return c.options().max_entries; })
	    .def_property_readonly("legacy_filters",
	                           [](const TcCollector &c) {
		                           py::list l;
		                           for (const auto &f : c.legacy_filters())
			                           l.append(py::dict(py::arg("direction") = f.direction,
			                                             py::arg("handle") = f.handle,
			                                             py::arg("priority") = f.priority,
			                                             py::arg("prog_id") = f.prog_id));
		                           return l;
	                           })
	    .def(
	        "read_flows",
	        [](const TcCollector &c, bool use_batch) {
		        std::vector<flow_record> recs;
		        {
			        py::gil_scoped_release nogil;
			        recs = read_flows(c.flows_fd(), monotonic_to_epoch_offset_ns(), use_batch);
		        }
		        return to_numpy(std::move(recs), record_dtype());
	        },
	        py::arg("use_batch") = true, "All flows, per-CPU values summed, timestamps in Unix-epoch ns.")
	    .def("read_stats",
	         [](const TcCollector &c) {
		         std::vector<dir_stats> s;
		         {
			         py::gil_scoped_release nogil;
			         s = read_stats(c.stats_fd());
		         }
		         return to_numpy(std::move(s), stats_dtype());
	         })
	    .def("count_flows", [](const TcCollector &c) {
		    py::gil_scoped_release nogil;
		    return count_entries(c.flows_fd());
	    });
}
