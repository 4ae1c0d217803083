// bind_drops.cpp - the drop watcher (--drops): DropWatcher and the kernel's
// drop reason names.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "drop_watcher.hpp"

namespace pktstat {
namespace {

#define DROP_FIELD(name, member, fmt)                                                                        \
	Field {                                                                                              \
		name, fmt, offsetof(DropEntry, member), sizeof(DropEntry::member)                            \
	}
const std::vector<Field> &drop_fields() {
	static const std::vector<Field> f = {
	    DROP_FIELD("saddr", key.tuple.saddr, "(16,)u1"), DROP_FIELD("daddr", key.tuple.daddr, "(16,)u1"),
	    DROP_FIELD("sport", key.tuple.sport, "u2"),      DROP_FIELD("dport", key.tuple.dport, "u2"),
	    DROP_FIELD("proto", key.tuple.proto, "u1"),      DROP_FIELD("dir", key.tuple.dir, "u1"),
	    DROP_FIELD("ipver", key.tuple.ipver, "u1"),      DROP_FIELD("ifindex", key.tuple.ifindex, "u4"),
	    DROP_FIELD("reason", key.reason, "u4"),          DROP_FIELD("netns", key.netns, "u4"),
	    DROP_FIELD("packets", value.packets, "u8"),      DROP_FIELD("bytes", value.bytes, "u8"),
	};
	return f;
}
#undef DROP_FIELD

py::dtype drop_dtype() {
	static auto *dt = [] {
		py::list names, formats, offsets;
		for (const Field &f : drop_fields()) {
			names.append(f.name);
			formats.append(f.format);
			offsets.append(f.offset);
		}
		return new py::dtype(names, formats, offsets, static_cast<py::ssize_t>(sizeof(DropEntry)));
	}();
	return *dt;
}

py::dict value_dict(const drop_value &v) {
	return py::dict(py::arg("packets") = v.packets, py::arg("bytes") = v.bytes);
}

} // namespace

void register_drops(py::module_ &m) {
	m.attr("drop_dtype") = drop_dtype();

	py::class_<DropWatcher>(m, "DropWatcher")
	    .def(py::init([](uint32_t ifindex, uint32_t netns, uint32_t max_entries) {
			 DropOptions o;
			 o.ifindex = ifindex;
			 o.netns = netns;
			 o.max_entries = max_entries;
			 py::gil_scoped_release nogil;
			 return std::make_unique<DropWatcher>(o);
		 }),
	         py::arg("ifindex") = 0, py::arg("netns") = 0, py::arg("max_entries") = 16384)
	    .def("attach", &DropWatcher::attach, py::call_guard<py::gil_scoped_release>())
	    .def("detach", &DropWatcher::detach, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("attached", &DropWatcher::attached)
	    .def_property_readonly("reasons", &DropWatcher::reasons)
	    .def_property_readonly("max_entries",
	                           [](const DropWatcher &w) { return w.options().max_entries; })
	    .def_property_readonly("prog_id", &DropWatcher::prog_id)
	    .def("read_flows",
	         [](const DropWatcher &w) {
			 std::vector<DropEntry> v;
			 {
				 py::gil_scoped_release nogil;
				 v = w.read_flows();
			 }
			 return to_numpy(std::move(v), drop_dtype());
		 })
	    .def("read_reasons",
	         [](const DropWatcher &w) {
			 std::vector<std::pair<uint32_t, drop_value>> v;
			 {
				 py::gil_scoped_release nogil;
				 v = w.read_reasons();
			 }
			 py::dict d;
			 for (const auto &[reason, value] : v)
				 d[py::int_(reason)] = value_dict(value);
			 return d;
		 })
	    .def("read_stats", [](const DropWatcher &w) {
		    const drop_stats s = w.read_stats();
		    return py::dict(py::arg("packets") = s.packets, py::arg("bytes") = s.bytes,
		                    py::arg("unparsed") = s.unparsed, py::arg("overflow") = s.overflow,
		                    py::arg("reason_overflow") = s.reason_overflow);
	    });
}

} // namespace pktstat
