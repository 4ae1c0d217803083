// bind_tc.cpp - TC mode classes and the legacy-tc janitor helpers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "tc_collector.hpp"

namespace pktstat {
namespace {

TcAttachMode parse_mode(const std::string &m) {
	if (m == "auto")
		return TcAttachMode::Auto;
	if (m == "tcx")
		return TcAttachMode::Tcx;
	if (m == "legacy")
		return TcAttachMode::Legacy;
	throw py::value_error("tc attach mode must be auto, tcx or legacy, not " + m);
}

} // namespace

void register_tc(py::module_ &m) {
	m.def(
	    "remove_stale_filter",
	    [](int ifindex, const std::string &dir, uint32_t handle, uint32_t prio, uint32_t prog_id) {
		    return remove_stale_filter(ifindex, dir == "ingress" ? TcDir::Ingress : TcDir::Egress,
		                               handle, prio, prog_id);
	    },
	    py::arg("ifindex"), py::arg("direction"), py::arg("handle"), py::arg("priority"),
	    py::arg("prog_id"));
	m.def("release_clsact", &release_clsact, py::arg("ifindex"), py::arg("created"), py::arg("pid"));
	m.def("sweep_stale_tc", &sweep_stale_tc, py::call_guard<py::gil_scoped_release>());

	py::class_<TcCollector> cls(m, "TcCollector");
	cls.def(py::init([](int ifindex, uint32_t max_entries, const std::string &mode, bool l3_device,
	                    bool arp, bool tcp_health) {
			TcOptions o;
			o.ifindex = ifindex;
			o.max_entries = max_entries;
			o.mode = parse_mode(mode);
			o.l3_device = l3_device;
			o.arp = arp;
			o.tcp_health = tcp_health;
			py::gil_scoped_release nogil;
			return std::make_unique<TcCollector>(o);
		}),
	        py::arg("ifindex"), py::arg("max_entries") = 65536, py::arg("attach") = "auto",
	        py::arg("l3_device") = false, py::arg("arp") = true, py::arg("tcp_health") = true)
	    .def("attach", &TcCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &TcCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &TcCollector::attached)
	    .def_property_readonly("attach_path", &TcCollector::attach_path)
	    .def_property_readonly("created_qdisc", &TcCollector::created_qdisc)
	    .def_property_readonly("max_entries",
	                           [](const TcCollector &c) { return c.options().max_entries; })
	    .def_property_readonly("legacy_filters", [](const TcCollector &c) {
		    py::list l;
		    for (const auto &f : c.legacy_filters())
			    l.append(py::dict(py::arg("direction") = f.direction,
			                      py::arg("handle") = f.handle, py::arg("priority") = f.priority,
			                      py::arg("prog_id") = f.prog_id));
		    return l;
	    });
	bind_live_flow_table(cls);
}

} // namespace pktstat
