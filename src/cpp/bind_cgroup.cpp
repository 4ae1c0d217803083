// bind_cgroup.cpp - cgroup mode class and the cgroup v2 helpers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "cgroup_collector.hpp"

namespace pktstat {
namespace {

const char *const kOwnerStatNames[OWNER_STAT_NR] = {"created", "released", "inherited", "unclaimed",
                                                    "claimed", "shared",   "map_full",  "events_lost",
                                                    "evicted", "reap_lost"};

} // namespace

void register_cgroup(py::module_ &m) {
	py::class_<CgroupCollector> cls(m, "CgroupCollector");
	cls.def(py::init([](const std::string &mount_root, const std::string &rel_path, uint32_t max_entries,
	                    uint32_t owner_entries, uint32_t path_cache, bool scan_sockets,
	                    const std::string &hier_root) {
			CgroupOptions o;
			o.mount_root = mount_root;
			o.rel_path = rel_path;
			o.max_entries = max_entries;
			o.owner_entries = owner_entries;
			o.path_cache = path_cache;
			o.scan_sockets = scan_sockets;
			o.hier_root = hier_root;
			py::gil_scoped_release nogil;
			return std::make_unique<CgroupCollector>(o);
		}),
	        py::arg("mount_root"), py::arg("rel_path"), py::arg("max_entries") = 65536,
	        py::arg("owner_entries") = 65536, py::arg("path_cache") = 16384,
	        py::arg("scan_sockets") = true, py::arg("hier_root") = "/")
	    .def("attach", &CgroupCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &CgroupCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &CgroupCollector::attached)
	    .def_property_readonly("attach_path", &CgroupCollector::attach_path)
	    .def_property_readonly("owner_sources", &CgroupCollector::owner_sources)
	    .def_property_readonly("cgroup_id", &CgroupCollector::cgroup_id)
	    .def_property_readonly("max_entries",
	                           [](const CgroupCollector &c) { return c.options().max_entries; })
	    .def_property_readonly(
		"scan_stats",
		[](const CgroupCollector &c) {
			const ScanStats &s = c.scan_stats();
			return py::dict(py::arg("netns") = s.netns, py::arg("sockets") = s.sockets,
		                        py::arg("in_cgroup") = s.in_cgroup, py::arg("owned") = s.owned,
		                        py::arg("shared") = s.shared, py::arg("unclaimed") = s.unclaimed,
		                        py::arg("listeners") = s.listeners,
		                        py::arg("processes") = s.processes, py::arg("cgroups") = s.cgroups,
		                        py::arg("seconds") = s.seconds);
		})
	    .def("owner_stats", [](const CgroupCollector &c) {
		    std::vector<uint64_t> v;
		    {
			    py::gil_scoped_release nogil;
			    v = c.owner_stats();
		    }
		    py::dict d;
		    for (int i = 0; i < OWNER_STAT_NR; ++i)
			    d[kOwnerStatNames[i]] = v[i];
		    d["removed"] = c.owners_removed();
		    return d;
	    });
	bind_cgroup_resolver(cls);
	bind_live_flow_table(cls);
}

} // namespace pktstat
