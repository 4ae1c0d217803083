// bind_replay.cpp - the Replayer class: capture files through the TC program.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "replay.hpp"

namespace pktstat {

namespace {

py::dict file_dict(const FileResult &res) {
	return py::dict(py::arg("linktype") = res.linktype, py::arg("linktype_name") = res.linktype_name,
	                py::arg("linktype_description") = res.linktype_description,
	                py::arg("frames") = res.frames, py::arg("damage") = res.damage);
}

// The engine calls progress without the GIL: take it, let Ctrl-C through
// (a KeyboardInterrupt raised here unwinds the replay loop), report.
ProgressFn progress_fn(py::object progress) {
	return [progress](uint64_t frames, uint64_t offset, uint64_t size) {
		py::gil_scoped_acquire gil;
		if (PyErr_CheckSignals() != 0)
			throw py::error_already_set();
		if (!progress.is_none())
			progress(frames, offset, size);
	};
}

} // namespace

void register_replay(py::module_ &m) {
	// Never freed, like the dtypes: a static py::object would outlive the interpreter.
	static auto *capture_error = new py::exception<CaptureError>(m, "CaptureError", PyExc_ValueError);
	static auto *linktype_error =
	    new py::exception<CaptureError>(m, "LinkTypeError", capture_error->ptr());
	py::register_exception_translator([](std::exception_ptr p) {
		try {
			if (p)
				std::rethrow_exception(p);
		} catch (const CaptureError &e) {
			set_error(
			    (e.kind() == CaptureError::LinkType ? linktype_error : capture_error)->ptr(),
			    e.what());
		}
	});

	m.def(
	    "capture_time_range",
	    [](const std::string &path) -> py::object {
		    uint64_t earliest = 0, latest = 0;
		    bool any;
		    {
			    py::gil_scoped_release nogil;
			    any = capture_time_range(path, earliest, latest);
		    }
		    if (!any)
			    return py::none();
		    return py::make_tuple(earliest, latest);
	    },
	    py::arg("path"), "(earliest, latest) timestamp of a capture file's records in Unix ns, or None.");

	py::class_<Replayer> cls(m, "Replayer");
	cls.def(py::init([](uint32_t max_entries, bool arp, bool tcp_health) {
			py::gil_scoped_release nogil;
			return std::make_unique<Replayer>(max_entries, arp, tcp_health);
		}),
	        py::arg("max_entries") = 65536, py::arg("arp") = true, py::arg("tcp_health") = true)
	    .def(
		"open_file",
		[](Replayer &r, const std::string &path) {
			{
				py::gil_scoped_release nogil;
				r.open_file(path);
			}
			return file_dict(r.file());
		},
		py::arg("path"), "Open a capture for advance(); checks it whole first.")
	    .def(
		"advance",
		[](Replayer &r, uint64_t until_ts_ns, py::object progress, uint64_t every) {
			ProgressFn fn = progress_fn(progress);
			py::gil_scoped_release nogil;
			return r.advance(until_ts_ns, fn, every);
		},
		py::arg("until_ts_ns"), py::arg("progress") = py::none(), py::arg("every") = 1 << 16,
		"Run the open file's frames stamped before until_ts_ns; True while frames remain.")
	    .def_property_readonly("next_ts", &Replayer::next_ts)
	    .def_property_readonly("file", [](const Replayer &r) { return file_dict(r.file()); })
	    .def("clear", &Replayer::clear, py::call_guard<py::gil_scoped_release>())
	    .def_property_readonly("max_entries", &Replayer::max_entries)
	    .def_property_readonly("counters", [](const Replayer &r) {
		    const ReplayCounters &c = r.counters();
		    return py::dict(py::arg("frames") = c.frames, py::arg("bytes") = c.bytes,
		                    py::arg("kernel_frames") = c.kernel_frames,
		                    py::arg("engine_unparsed_frames") = c.engine_unparsed_frames,
		                    py::arg("engine_unparsed_bytes") = c.engine_unparsed_bytes,
		                    py::arg("clipped_frames") = c.clipped_frames,
		                    py::arg("earliest_ts_ns") = c.earliest_ts_ns,
		                    py::arg("latest_ts_ns") = c.latest_ts_ns);
	    });
	// read_stats: the kernel counters plus the engine's own unparsed frames.
	cls.def("read_stats", [](const Replayer &r) {
		std::vector<dir_stats> s;
		{
			py::gil_scoped_release nogil;
			s = r.read_stats();
		}
		return to_numpy(std::move(s), stats_dtype());
	});
	// Flows carry capture timestamps (epoch ns): no offset. A drain without
	// `now_ns` ends at the latest frame's timestamp.
	bind_flow_table(
	    cls, [](Replayer &r) -> FlowDrain & { return r.drainer(); },
	    [](Replayer &r, std::optional<uint64_t> now_ns, bool timeouts, bool end, bool use_batch) {
		    return r.drain(now_ns ? *now_ns : r.counters().latest_ts_ns, timeouts, end, use_batch);
	    });
}

} // namespace pktstat
