// bind_common.hpp - what every mode's bindings share: the record and counter
// dtypes (derived from the compiled structs) and zero-copy hand-over to NumPy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <string>
#include <unordered_map>
#include <vector>

#include "flow.h"
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
inline PyObject *message_text(const char *s) { return PyUnicode_DecodeUTF8(s, std::strlen(s), "surrogateescape"); }

// Raise `type` (an exception class) with message `what` (see message_text).
inline void set_error(PyObject *type, const char *what) {
	PyObject *msg = message_text(what);
	if (!msg) return; // (a Python error is already set)
	PyErr_SetObject(type, msg);
	Py_DECREF(msg);
}

const std::vector<Field> &record_fields();
const std::vector<Field> &stats_fields();
py::dtype record_dtype();
py::dtype stats_dtype();
py::dict layout_of(const std::vector<Field> &fields, size_t itemsize);

// Hand a vector to NumPy without copying: the capsule owns it (and gives a
// record buffer back to read_flows when NumPy is done with it).
template <class T> py::array to_numpy(std::vector<T> &&v, const py::dtype &dt) {
	auto *owned = new std::vector<T>(std::move(v)); // freed by the capsule
	py::capsule base(owned, [](void *p) {
		auto *vec = static_cast<std::vector<T> *>(p);
		if constexpr (std::is_same_v<T, flow_record>) release_records(std::move(*vec));
		delete vec;
	});
	return py::array(dt, {static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
	                 owned->data(), base);
}

// Adds read_flows(use_batch=True) and read_stats() to a mode's
// class, given accessors for its flow map fd, stats map fd and the offset
// that turns its timestamps into Unix-epoch ns.
template <class C, class FlowsFd, class StatsFd, class TsOffset>
void bind_map_readers(py::class_<C> &cls, FlowsFd flows_fd, StatsFd stats_fd, TsOffset ts_offset) {
	cls.def(
	       "read_flows",
	       [flows_fd, ts_offset](const C &c, bool use_batch) {
		       std::vector<flow_record> recs;
		       {
			       py::gil_scoped_release nogil;
			       recs = read_flows(flows_fd(c), ts_offset(c), use_batch);
		       }
		       return to_numpy(std::move(recs), record_dtype());
	       },
	       py::arg("use_batch") = true, "All flows, per-CPU values summed, timestamps in Unix-epoch ns.")
	    .def("read_stats",
	         [stats_fd](const C &c) {
		         std::vector<dir_stats> s;
		         {
			         py::gil_scoped_release nogil;
			         s = read_stats(stats_fd(c));
		         }
		         return to_numpy(std::move(s), stats_dtype());
	         });
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
		for (const auto &[id, path] : paths) d[py::int_(id)] = path_str(path);
		return d;
	});
}

} // namespace pktstat
