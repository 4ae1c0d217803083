// bind_process.cpp - process mode class.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "process_collector.hpp"

namespace pktstat {
namespace {

ProcessBackend parse_backend(const std::string &b) {
	if (b == "auto")
		return ProcessBackend::Auto;
	if (b == "tracepoint")
		return ProcessBackend::Tracepoint;
	if (b == "fentry")
		return ProcessBackend::Fentry;
	if (b == "kprobe")
		return ProcessBackend::Kprobe;
	throw py::value_error("process backend must be auto, tracepoint, fentry or kprobe, not " + b);
}

const char *const kProcStatNames[PROC_STAT_NR] = {"unowned_packets", "unowned_bytes",   "no_peer_packets",
                                                  "no_peer_bytes",   "owners_released", "owners_evicted"};

} // namespace

void register_process(py::module_ &m) {
	py::class_<ProcessCollector> cls(m, "ProcessCollector");
	cls.def(py::init([](uint32_t max_entries, const std::string &backend, const std::string &cgroup_mount,
	                    const std::string &hier_root, uint32_t path_cache, uint32_t owner_entries) {
			ProcessOptions o;
			o.max_entries = max_entries;
			o.backend = parse_backend(backend);
			o.cgroup_mount = cgroup_mount;
			o.hier_root = hier_root;
			o.path_cache = path_cache;
			o.owner_entries = owner_entries;
			py::gil_scoped_release nogil;
			return std::make_unique<ProcessCollector>(o);
		}),
	        py::arg("max_entries") = 65536, py::arg("backend") = "auto", py::arg("cgroup_mount") = "",
	        py::arg("hier_root") = "/", py::arg("path_cache") = 16384, py::arg("owner_entries") = 65536)
	    .def("attach", &ProcessCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &ProcessCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &ProcessCollector::attached)
	    .def_property_readonly("attach_path", &ProcessCollector::attach_path)
	    .def_property_readonly("backend",
	                           [](const ProcessCollector &c) { return backend_name(c.backend()); })
	    .def_property_readonly("refused", &ProcessCollector::refused,
	                           "Backends passed over, as (name, reason) pairs in the order tried.")
	    .def_property_readonly("hooks", &ProcessCollector::hooks)
	    .def_property_readonly("max_entries",
	                           [](const ProcessCollector &c) { return c.options().max_entries; })
	    .def("proc_stats", [](const ProcessCollector &c) {
		    std::vector<uint64_t> v;
		    {
			    py::gil_scoped_release nogil;
			    v = c.proc_stats();
		    }
		    py::dict d;
		    for (int i = 0; i < PROC_STAT_NR; ++i)
			    d[kProcStatNames[i]] = v[i];
		    return d;
	    });
	bind_cgroup_resolver(cls);
	bind_live_flow_table(cls);
}

} // namespace pktstat
