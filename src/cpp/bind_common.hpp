// bind_common.hpp - what every mode's bindings share: the record and counter
// dtypes (derived from the compiled structs) and zero-copy hand-over to NumPy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <type_traits>
#include <vector>

#include "flow.h"
#include "flow_drain.hpp"
#include "flow_table.hpp"

namespace pktstat {
namespace py = pybind11;

struct Field {
	const char *name;
	const char *format;
	size_t offset;
	size_t size;
};

// An engine message as Python text. It may carry a file or interface name
// that is not UTF-8: decoded as os.fsdecode does (surrogateescape), so it
// never fails and the name reads back as Python spells it.
inline PyObject *message_text(const char *s) {
	return PyUnicode_DecodeUTF8(s, std::strlen(s), "surrogateescape");
}

// Raise `type` (an exception class) with message `what` (see message_text).
inline void set_error(PyObject *type, const char *what) {
	PyObject *msg = message_text(what);
	if (!msg)
		return; // (a Python error is already set)
	PyErr_SetObject(type, msg);
	Py_DECREF(msg);
}

const std::vector<Field> &record_fields();
const std::vector<Field> &stats_fields();
const std::vector<Field> &interval_fields();
const std::vector<Field> &ended_fields();
py::dtype record_dtype();
py::dtype stats_dtype();
py::dtype interval_dtype();
py::dtype ended_dtype();
py::dtype name_dtype();
const std::vector<Field> &name_fields();
py::dtype dns_name_dtype();
const std::vector<Field> &dns_name_fields();
py::dict layout_of(const std::vector<Field> &fields, size_t itemsize);

// Hand a vector to NumPy without copying: the capsule owns it (and gives a
// record buffer back to read_flows when NumPy is done with it).
template <class T> py::array to_numpy(std::vector<T> &&v, const py::dtype &dt) {
	auto *owned = new std::vector<T>(std::move(v)); // freed by the capsule
	py::capsule base(owned, [](void *p) {
		auto *vec = static_cast<std::vector<T> *>(p);
		if constexpr (std::is_same_v<T, flow_record>)
			release_records(std::move(*vec));
		delete vec;
	});
	return py::array(dt, {static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
	                 owned->data(), base);
}

// A drain's outcome as Python sees it (_core.Interval).
struct PyInterval {
	uint64_t start_ns, end_ns, live_flows, evicted_flows, wait_ns, read_ns, fold_ns;
	py::array records, stats, ended, totals, names;
	uint64_t names_written = 0, names_full = 0;
};
PyInterval to_python(Interval &&iv);
void bind_interval(py::module_ &m);

// Adds the flow-table methods to a mode's class, given an accessor for its
// FlowDrain, a drain function (C&, now_ns or nullopt, timeouts, end,
// use_batch) -> Interval, and the `now` of a drain called without one:
// drain(), flows(), set_flow_limits(), flow_limits, drains, and today's
// read_flows(use_batch=True) (a drain without timeouts, then every live
// flow's lifetime record) and read_stats() (the run's counters).
template <class C, class Drainer, class DrainFn>
void bind_flow_table(py::class_<C> &cls, Drainer drainer, DrainFn drain_fn) {
	cls.def(
	       "drain",
	       [drain_fn](C &c, std::optional<uint64_t> now_ns, bool timeouts, bool end, bool use_batch) {
		       Interval iv;
		       {
			       py::gil_scoped_release nogil;
			       iv = drain_fn(c, now_ns, timeouts, end, use_batch);
		       }
		       return to_python(std::move(iv));
	       },
	       py::arg("now_ns") = py::none(), py::arg("timeouts") = true, py::arg("end") = false,
	       py::arg("use_batch") = true)
	    .def("flows",
	         [drainer](C &c) {
			 std::vector<flow_record> recs;
			 {
				 py::gil_scoped_release nogil;
				 recs = drainer(c).flows();
			 }
			 return to_numpy(std::move(recs), record_dtype());
		 })
	    .def(
		"set_flow_limits",
		[drainer](C &c, uint64_t idle_timeout_ns, uint64_t active_timeout_ns, uint64_t max_flows) {
			FlowLimits l;
			l.idle_timeout_ns = idle_timeout_ns;
			l.active_timeout_ns = active_timeout_ns;
			l.max_flows = max_flows;
			drainer(c).set_limits(l);
		},
		py::arg("idle_timeout_ns") = FlowLimits{}.idle_timeout_ns,
		py::arg("active_timeout_ns") = FlowLimits{}.active_timeout_ns,
		py::arg("max_flows") = FlowLimits{}.max_flows)
	    .def_property_readonly("flow_limits",
	                           [drainer](C &c) {
					   const FlowLimits l = drainer(c).limits();
					   return py::dict(py::arg("idle_timeout_ns") = l.idle_timeout_ns,
		                                           py::arg("active_timeout_ns") = l.active_timeout_ns,
		                                           py::arg("max_flows") = l.max_flows);
				   })
	    .def_property_readonly("drains", [drainer](C &c) { return drainer(c).drains(); })
	    .def_property_readonly("names_full", [drainer](C &c) { return drainer(c).names_full(); })
	    .def("names",
	         [drainer](C &c) {
			 std::vector<name_record> names;
			 {
				 py::gil_scoped_release nogil;
				 names = drainer(c).names();
			 }
			 return to_numpy(std::move(names), name_dtype());
		 })
	    .def_property_readonly("dns_addrs_full", [drainer](C &c) { return drainer(c).dns_addrs_full(); })
	    .def("dns_names",
	         [drainer](C &c) {
			 std::vector<dns_name_record> names;
			 {
				 py::gil_scoped_release nogil;
				 names = drainer(c).dns_names();
			 }
			 return to_numpy(std::move(names), dns_name_dtype());
		 })
	    .def(
		"read_flows",
		[drain_fn, drainer](C &c, bool use_batch) {
			std::vector<flow_record> recs;
			{
				py::gil_scoped_release nogil;
				(void)drain_fn(c, std::nullopt, false, false, use_batch);
				recs = drainer(c).flows();
			}
			return to_numpy(std::move(recs), record_dtype());
		},
		py::arg("use_batch") = true);
}

// read_stats() of a live mode: the run's counters (drained intervals and
// what the active side holds now).
template <class C, class Drainer> void bind_read_stats(py::class_<C> &cls, Drainer drainer) {
	cls.def("read_stats", [drainer](C &c) {
		std::vector<dir_stats> s;
		{
			py::gil_scoped_release nogil;
			s = drainer(c).totals(true);
		}
		return to_numpy(std::move(s), stats_dtype());
	});
}

// Both, for a live collector (drains flip sides; now = the wall clock).
template <class C> void bind_live_flow_table(py::class_<C> &cls) {
	auto drainer = [](C &c) -> FlowDrain & { return c.drainer(); };
	bind_flow_table(cls, drainer,
	                [](C &c, std::optional<uint64_t> now_ns, bool timeouts, bool end, bool use_batch) {
				const uint64_t now = now_ns ? *now_ns : epoch_now_ns(c.epoch_offset_ns());
				return c.drainer().drain(now, timeouts, end, use_batch);
			});
	bind_read_stats(cls, drainer);
}

// A cgroup path as Python text. Directory names are bytes: one that is not
// UTF-8 keeps its bytes as \xNN escapes (as comm does), so a snapshot never
// fails on a name someone chose to break it, and JSON stays valid.
py::str path_str(const std::string &s);

// Adds resolve_cgroups(ids) -> {id: path} to the class of a mode whose flows
// carry their process's cgroup (cgroup and process mode).
template <class C> void bind_cgroup_resolver(py::class_<C> &cls) {
	cls.def("resolve_cgroups", [](C &c, const std::vector<uint64_t> &ids) {
		std::unordered_map<uint64_t, std::string> paths;
		{
			py::gil_scoped_release nogil;
			paths = c.resolve_cgroups(ids);
		}
		py::dict d;
		for (const auto &[id, path] : paths)
			d[py::int_(id)] = path_str(path);
		return d;
	});
}

} // namespace pktstat
