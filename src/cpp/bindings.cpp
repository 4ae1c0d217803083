// bindings.cpp - the pybind11 module pktstat_bpf._core (private; the public
// API is the Python package). Each area registers its own classes and
// functions in bind_<area>.cpp (register_<area>); this file holds what is
// common: the libbpf log, errno -> exception mapping, the record dtypes, the
// test seam.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <string>

#include "bind_common.hpp"
#include "error.hpp"
#include "map_memory.hpp"
#include "test_knobs.hpp"

namespace py = pybind11;
using namespace pktstat;

namespace pktstat {
void register_tc(py::module_ &m);
void register_xdp(py::module_ &m);
void register_cgroup(py::module_ &m);
void register_replay(py::module_ &m);
void register_process(py::module_ &m);
void register_drops(py::module_ &m);
} // namespace pktstat

namespace {

// libbpf log -> Python logging ("pktstat_bpf.libbpf").
int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list args) {
	char buf[2048];
	int n = std::vsnprintf(buf, sizeof(buf), fmt, args);
	if (n <= 0)
		return n;
	std::string msg(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
	while (!msg.empty() && msg.back() == '\n')
		msg.pop_back();
	if (!Py_IsInitialized() || msg.empty())
		return n;
	py::gil_scoped_acquire gil;
	try {
		static const int levels[] = {30 /*WARN*/, 20 /*INFO*/, 10 /*DEBUG*/};
		auto text = py::reinterpret_steal<py::str>(message_text(msg.c_str()));
		py::module_::import("logging")
		    .attr("getLogger")("pktstat_bpf.libbpf")
		    .attr("log")(levels[level], text);
	} catch (py::error_already_set &e) {
		e.discard_as_unraisable(__func__);
	}
	return n;
}

// Engine notices (map_memory.hpp) -> Python logging ("pktstat_bpf", INFO:
// the CLI shows it unless -q), from any thread, GIL held or not.
void log_notice(const std::string &line) {
	if (!Py_IsInitialized())
		return;
	py::gil_scoped_acquire gil;
	try {
		py::module_::import("logging").attr("getLogger")("pktstat_bpf").attr("info")(line);
	} catch (py::error_already_set &e) {
		e.discard_as_unraisable(__func__);
	}
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
			if (p)
				std::rethrow_exception(p);
		} catch (const SysError &e) {
			if (e.err() == ENODEV) {
				set_error(PyExc_LookupError, e.what());
				return;
			}
			py::object exc = py::reinterpret_steal<py::object>(
			    PyObject_CallFunction(PyExc_OSError, "iN", e.err(), message_text(e.what())));
			if (!exc)
				return; // Python error already set
			PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc.ptr())), exc.ptr());
		}
	});

	// Registered after the SysError translator, so tried before it; their
	// messages are complete. FeatureMissing: the kernel lacks something (exit
	// 69). TableTooLarge: the flow table does not fit in the kernel memory
	// there is (a usage error: the value of --max-entries).
	static auto *feature_missing = new py::exception<FeatureMissing>(m, "FeatureMissing", PyExc_OSError);
	static auto *table_too_large = new py::exception<TableTooLarge>(m, "TableTooLarge", PyExc_OSError);
	py::register_exception_translator([](std::exception_ptr p) {
		try {
			if (p)
				std::rethrow_exception(p);
		} catch (const FeatureMissing &e) {
			set_error(feature_missing->ptr(), e.what());
		} catch (const TableTooLarge &e) {
			set_error(table_too_large->ptr(), e.what());
		}
	});

	// The test seam (test_knobs.hpp): PKTSTAT_BPF_TEST_FAULTS read now, for
	// the faults the Python side applies (cgroup2 missing, progress delay).
	m.def("test_faults", [] {
		const auto f = load_test_faults();
		py::dict d;
		d["missing"] = f->missing;
		d["fail_attach_at"] = f->fail_attach_at;
		d["xdp_buff_len"] = f->xdp_buff_len;
		d["progress_delay"] = f->progress_delay;
		return d;
	});

	m.attr("record_dtype") = record_dtype();
	m.attr("stats_dtype") = stats_dtype();
	m.def("_drop_spare_records", &drop_spare_records,
	      "Free the record buffer kept for the next read_flows (tests).");
	m.def("libbpf_version", [] { return std::string(libbpf_version_string()); });

	bind_interval(m);
	register_tc(m);
	register_xdp(m);
	register_cgroup(m);
	register_replay(m);
	register_process(m);
	register_drops(m);
}
