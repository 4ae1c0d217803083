// bind_cgroup.cpp - cgroup mode class and the cgroup v2 helpers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bind_common.hpp"
#include "cgroup_collector.hpp"
#include "sock_scan.hpp"

namespace pktstat {
namespace {

const char *const kOwnerStatNames[OWNER_STAT_NR] = {"created",   "released", "inherited", "unclaimed",
                                                    "claimed",   "shared",   "map_full",  "events_lost",
                                                    "evicted",   "reap_lost"};

// A cgroup path as Python text. Directory names are bytes: one that is not
// UTF-8 keeps its bytes as \xNN escapes (as comm does), so a snapshot never
// fails on a name someone chose to break it, and JSON stays valid.
py::str path_str(const std::string &s) {
	PyObject *o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
	if (!o) throw py::error_already_set();
	return py::reinterpret_steal<py::str>(o);
}

py::dict owner_dict(const sock_owner &o) {
	return py::dict(py::arg("pid") = o.pid, py::arg("flags") = o.flags,
	                py::arg("comm") = py::bytes(o.comm, strnlen(o.comm, sizeof(o.comm))));
}

} // namespace

void bind_cgroup(py::module_ &m) {
	m.def("cgroup_id_of", &cgroup_id_of, py::arg("dir"), "The cgroup id of a cgroup v2 directory.");
	m.def(
	    "_diag_sockets",
	    [] {
		    std::vector<DiagSocket> v;
		    {
			    py::gil_scoped_release nogil;
			    v = diag_all_sockets();
		    }
		    py::list l;
		    for (const DiagSocket &s : v)
			    l.append(py::dict(py::arg("cookie") = s.cookie, py::arg("inode") = s.inode,
			                      py::arg("cgroup_id") = s.cgroup_id, py::arg("has_cgroup") = s.has_cgroup,
			                      py::arg("netns_cookie") = s.netns_cookie, py::arg("sport") = s.sport,
			                      py::arg("protocol") = s.protocol, py::arg("state") = s.state,
			                      py::arg("family") = s.family));
		    return l;
	    },
	    "Every TCP/UDP/UDP-Lite socket sock_diag lists in every network namespace (debugging, tests).");
	py::dict flags;
	flags["shared"] = static_cast<int>(OWNER_SHARED);
	flags["released"] = static_cast<int>(OWNER_RELEASED);
	flags["unclaimed"] = static_cast<int>(OWNER_UNCLAIMED);
	flags["inherited"] = static_cast<int>(OWNER_INHERITED);
	flags["scanned"] = static_cast<int>(OWNER_SCANNED);
	flags["created"] = static_cast<int>(OWNER_CREATED);
	flags["claimed"] = static_cast<int>(OWNER_CLAIMED);
	m.attr("OWNER_FLAGS") = flags;

	py::class_<CgroupCollector> cls(m, "CgroupCollector");
	cls.def(py::init([](const std::string &mount_root, const std::string &rel_path, uint32_t max_entries,
	                    uint32_t owner_entries, uint32_t path_cache, bool scan_sockets, int fail_attach_at,
	                    const std::string &hier_root) {
		        CgroupOptions o;
		        o.mount_root = mount_root;
		        o.rel_path = rel_path;
		        o.max_entries = max_entries;
		        o.owner_entries = owner_entries;
		        o.path_cache = path_cache;
		        o.scan_sockets = scan_sockets;
		        o.fail_attach_at = fail_attach_at;
		        o.hier_root = hier_root;
		        py::gil_scoped_release nogil;
		        return std::make_unique<CgroupCollector>(o);
	        }),
	        py::arg("mount_root"), py::arg("rel_path"), py::arg("max_entries") = 65536,
	        py::arg("owner_entries") = 65536, py::arg("path_cache") = 16384, py::arg("scan_sockets") = true,
	        py::arg("_fail_attach_at") = -1, py::arg("hier_root") = "/")
	    .def("attach", &CgroupCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &CgroupCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &CgroupCollector::attached)
	    .def_property_readonly("attach_path", &CgroupCollector::attach_path)
	    .def_property_readonly("owner_sources", &CgroupCollector::owner_sources)
	    .def_property_readonly("cgroup_id", &CgroupCollector::cgroup_id)
	    .def_property_readonly("max_entries", [](const CgroupCollector &c) { return c.options().max_entries; })
	    .def_property_readonly("scan_stats",
	                           [](const CgroupCollector &c) {
		                           const ScanStats &s = c.scan_stats();
		                           return py::dict(py::arg("netns") = s.netns, py::arg("sockets") = s.sockets,
		                                           py::arg("in_cgroup") = s.in_cgroup, py::arg("owned") = s.owned,
		                                           py::arg("shared") = s.shared,
		                                           py::arg("unclaimed") = s.unclaimed,
		                                           py::arg("listeners") = s.listeners,
		                                           py::arg("processes") = s.processes,
		                                           py::arg("cgroups") = s.cgroups, py::arg("seconds") = s.seconds);
	                           })
	    .def("owner_stats",
	         [](const CgroupCollector &c) {
		         std::vector<uint64_t> v;
		         {
			         py::gil_scoped_release nogil;
			         v = c.owner_stats();
		         }
		         py::dict d;
		         for (int i = 0; i < OWNER_STAT_NR; ++i) d[kOwnerStatNames[i]] = v[i];
		         d["removed"] = c.owners_removed();
		         return d;
	         })
	    .def("owners",
	         [](const CgroupCollector &c) {
		         std::vector<CgroupCollector::OwnerEntry> v;
		         {
			         py::gil_scoped_release nogil;
			         v = c.owners();
		         }
		         py::dict d;
		         for (const auto &e : v) d[py::int_(e.cookie)] = owner_dict(e.owner);
		         return d;
	         },
	         "The socket-cookie -> owner map: {cookie: {pid, flags, comm}}.")
	    .def("resolve_cgroups", [](CgroupCollector &c, const std::vector<uint64_t> &ids) {
		    std::unordered_map<uint64_t, std::string> paths;
		    {
			    py::gil_scoped_release nogil;
			    paths = c.resolve_cgroups(ids);
		    }
		    py::dict d;
		    for (const auto &[id, path] : paths) d[py::int_(id)] = path_str(path);
		    return d;
	    });
	bind_live_flow_table(cls);
}

} // namespace pktstat
