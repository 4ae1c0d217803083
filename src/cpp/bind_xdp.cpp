// bind_xdp.cpp - XDP mode class and the XDP query helper.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "xdp_collector.hpp"

namespace pktstat {
namespace {

XdpMode parse_mode(const std::string &m) {
	if (m == "auto")
		return XdpMode::Auto;
	if (m == "native")
		return XdpMode::Native;
	if (m == "generic")
		return XdpMode::Generic;
	if (m == "offload")
		return XdpMode::Offload;
	throw py::value_error("XDP mode must be auto, native, generic or offload, not " + m);
}

py::dict state_dict(const XdpState &s) {
	return py::dict(py::arg("prog_id") = s.prog_id, py::arg("mode") = s.mode,
	                py::arg("name") = s.prog_name);
}

} // namespace

void register_xdp(py::module_ &m) {
	m.def(
	    "xdp_query",
	    [](int ifindex) {
		    XdpState s;
		    {
			    py::gil_scoped_release nogil;
			    s = xdp_query(ifindex);
		    }
		    return state_dict(s);
	    },
	    py::arg("ifindex"),
	    "The XDP program attached to ifindex: {prog_id, mode, name} (prog_id 0: none).");

	py::class_<XdpCollector> cls(m, "XdpCollector");
	cls.def(py::init([](int ifindex, uint32_t max_entries, const std::string &mode, bool l3_device,
	                    bool arp, bool tcp_health) {
			XdpOptions o;
			o.ifindex = ifindex;
			o.max_entries = max_entries;
			o.mode = parse_mode(mode);
			o.l3_device = l3_device;
			o.arp = arp;
			o.tcp_health = tcp_health;
			py::gil_scoped_release nogil;
			return std::make_unique<XdpCollector>(o);
		}),
	        py::arg("ifindex"), py::arg("max_entries") = 65536, py::arg("mode") = "auto",
	        py::arg("l3_device") = false, py::arg("arp") = true, py::arg("tcp_health") = true)
	    .def("attach", &XdpCollector::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &XdpCollector::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &XdpCollector::attached)
	    .def_property_readonly("attach_path", &XdpCollector::attach_path)
	    .def_property_readonly("native_refusal", &XdpCollector::native_refusal)
	    .def_property_readonly("buff_len", &XdpCollector::buff_len)
	    .def_property_readonly("max_entries",
	                           [](const XdpCollector &c) { return c.options().max_entries; });
	bind_live_flow_table(cls);
}

} // namespace pktstat
