// bindings.cpp - the pybind11 module pktstat_bpf._core (private; the public
// API is the Python package). Each mode binds its own classes in
// bind_<mode>.cpp; this file holds what is common: the libbpf log, errno ->
// exception mapping, the record layout.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "bind_common.hpp"
#include "error.hpp"
#include "flow.h"
#include "map_memory.hpp"
#include "test_knobs.hpp"

namespace py = pybind11;
using namespace pktstat;

namespace pktstat {
void bind_tc(py::module_ &m);
void bind_xdp(py::module_ &m);
void bind_cgroup(py::module_ &m);
void bind_replay(py::module_ &m);
void bind_process(py::module_ &m);
void bind_bench(py::module_ &m); // private hooks for bench/
} // namespace pktstat

namespace {

// libbpf log -> Python logging ("pktstat_bpf.libbpf").
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

// Engine notices (map_memory.hpp) -> Python logging ("pktstat_bpf", INFO:
// the CLI shows it unless -q), from any thread, GIL held or not.
void log_notice(const std::string &line) {
	if (!Py_IsInitialized()) return;
	py::gil_scoped_acquire gil;
	try {
		py::module_::import("logging").attr("getLogger")("pktstat_bpf").attr("info")(line);
	} catch (py::error_already_set &e) {
		e.discard_as_unraisable(__func__);
	}
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
	r.key.tuple.kind = FLOW_KIND_RETRANSMIT;
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

} // namespace

PYBIND11_MODULE(_core, m) {
	m.doc() = "pktstat-bpf engine (private: use the pktstat_bpf package)";
	libbpf_set_print(libbpf_log);
	set_notice_sink(log_notice);

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

	// Registered after the SysError translator, so tried before it; their
	// messages are complete. FeatureMissing: the kernel lacks something (exit
	// 69). TableTooLarge: the flow table does not fit in the kernel memory
	// there is (a usage error: the value of --max-entries).
	py::register_exception<FeatureMissing>(m, "FeatureMissing", PyExc_OSError);
	py::register_exception<TableTooLarge>(m, "TableTooLarge", PyExc_OSError);
	m.attr("FORCE_MISSING_ENV") = kForceMissingEnv;

	m.attr("record_dtype") = record_dtype();
	m.attr("stats_dtype") = stats_dtype();
	m.def("record_layout", [] { return layout_of(record_fields(), sizeof(flow_record)); },
	      "Offsets and sizes of flow_record fields, as compiled.");
	m.def("stats_layout", [] { return layout_of(stats_fields(), sizeof(dir_stats)); });
	m.def("_test_record", &test_record);
	m.def("_drop_spare_records", &drop_spare_records, "Free the record buffer kept for the next read_flows (tests).");
	m.def("libbpf_version", [] { return std::string(libbpf_version_string()); });
	m.def("possible_cpus", &possible_cpus);
	m.attr("FLOW_DIR_INGRESS") = static_cast<int>(FLOW_DIR_INGRESS);
	m.attr("FLOW_DIR_EGRESS") = static_cast<int>(FLOW_DIR_EGRESS);
	m.attr("FLOW_DIR_NONE") = static_cast<int>(FLOW_DIR_NONE);

	bind_interval(m);
	bind_tc(m);
	bind_xdp(m);
	bind_cgroup(m);
	bind_replay(m);
	bind_process(m);
	bind_bench(m);
}
