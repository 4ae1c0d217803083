// bind_bench.cpp - private hooks for bench/ (the package never uses them):
// load any BPF object file with settings, run a program by BPF_PROG_TEST_RUN
// with the kernel's own timer, fill and read maps in batches, and attach a
// program to an interface through the engine's owners. Everything here is a
// thin wrapper: the benchmarks measure the same objects and syscalls the
// collectors use.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bind_common.hpp"
#include "error.hpp"
#include "fd.hpp"
#include "flow_table.hpp"
#include "tc_attach.hpp"
#include "tc_collector.hpp"
#include "xdp_collector.hpp"

namespace pktstat {
namespace {

// A BPF object file, opened, configured and loaded. `rodata` sets
// `const volatile` globals by name (bytes of the variable's size),
// `max_entries` resizes maps by name, `xdp_frags` loads every XDP program with
// BPF_F_XDP_HAS_FRAGS (as XdpCollector does when the kernel has
// bpf_xdp_get_buff_len).
class BenchObject {
public:
	BenchObject(const std::string &path, const std::map<std::string, std::string> &rodata,
	            const std::map<std::string, uint32_t> &max_entries, bool xdp_frags) {
		obj_ = bpf_object__open_file(path.c_str(), nullptr);
		if (!obj_) throw SysError("open " + path, errno ? errno : EINVAL);
		try {
			configure(rodata, max_entries, xdp_frags);
			check_libbpf(bpf_object__load(obj_), "load " + path);
		} catch (...) {
			bpf_object__close(obj_);
			throw;
		}
	}
	BenchObject(const BenchObject &) = delete;
	BenchObject &operator=(const BenchObject &) = delete;
	~BenchObject() { close(); }

	void close() noexcept {
		if (obj_) bpf_object__close(obj_);
		obj_ = nullptr;
	}

	int prog_fd(const std::string &name) const {
		bpf_program *p = bpf_object__find_program_by_name(live(), name.c_str());
		if (!p) throw SysError("no program " + name, ENOENT);
		return bpf_program__fd(p);
	}

	int map_fd(const std::string &name) const {
		bpf_map *m = bpf_object__find_map_by_name(live(), name.c_str());
		if (!m) throw SysError("no map " + name, ENOENT);
		return bpf_map__fd(m);
	}

private:
	bpf_object *live() const {
		if (!obj_) throw SysError("BPF object closed", EBADF);
		return obj_;
	}

	void configure(const std::map<std::string, std::string> &rodata, const std::map<std::string, uint32_t> &max_entries,
	               bool xdp_frags) {
		for (const auto &[name, n] : max_entries) {
			bpf_map *m = bpf_object__find_map_by_name(obj_, name.c_str());
			if (!m) throw SysError("no map " + name, ENOENT);
			check_libbpf(bpf_map__set_max_entries(m, n), "set max_entries of " + name);
		}
		if (xdp_frags) {
			bpf_program *p;
			bpf_object__for_each_program(p, obj_) {
				if (bpf_program__type(p) == BPF_PROG_TYPE_XDP)
					check_libbpf(bpf_program__set_flags(p, bpf_program__flags(p) | BPF_F_XDP_HAS_FRAGS),
					             "set BPF_F_XDP_HAS_FRAGS");
			}
		}
		if (rodata.empty()) return;
		bpf_map *ro = nullptr, *m;
		bpf_object__for_each_map(m, obj_) {
			const char *n = bpf_map__name(m);
			size_t len = std::strlen(n);
			if (bpf_map__is_internal(m) && len >= 7 && std::strcmp(n + len - 7, ".rodata") == 0) ro = m;
		}
		const btf *b = bpf_object__btf(obj_);
		const int sec_id = b ? btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC) : -1;
		if (!ro || sec_id < 0) throw SysError("the object has no .rodata to set", ENOENT);
		size_t size = 0;
		const void *init = bpf_map__initial_value(ro, &size);
		std::vector<char> data(static_cast<const char *>(init), static_cast<const char *>(init) + size);
		const btf_type *sec = btf__type_by_id(b, sec_id);
		for (const auto &[name, bytes] : rodata) {
			const btf_var_secinfo *vi = btf_var_secinfos(sec);
			bool found = false;
			for (int i = 0; i < btf_vlen(sec); ++i, ++vi) {
				const btf_type *var = btf__type_by_id(b, vi->type);
				if (name != btf__name_by_offset(b, var->name_off)) continue;
				if (bytes.size() != vi->size)
					throw SysError(name + " is " + std::to_string(vi->size) + " bytes, not " +
					                   std::to_string(bytes.size()),
					               EINVAL);
				std::memcpy(data.data() + vi->offset, bytes.data(), bytes.size());
				found = true;
				break;
			}
			if (!found) throw SysError("no setting " + name + " in .rodata", ENOENT);
		}
		check_libbpf(bpf_map__set_initial_value(ro, data.data(), data.size()), "set .rodata");
	}

	bpf_object *obj_ = nullptr;
};

// An attachment made for a benchmark: a TCX link, or an XDP link. Dropping
// it (or close()) detaches.
struct BenchLink {
	std::unique_ptr<TcAttachment> tc;
	UniqueFd xdp;
	void close() noexcept {
		tc.reset();
		xdp.reset();
	}
};

py::dict test_run(int prog_fd, const py::bytes &data, int repeat, const py::bytes &ctx, bool live_frames,
                  uint32_t batch_size) {
	const std::string d = data, c = ctx;
	LIBBPF_OPTS(bpf_test_run_opts, o);
	o.data_in = d.data();
	o.data_size_in = static_cast<uint32_t>(d.size());
	o.repeat = repeat;
	if (!c.empty()) {
		o.ctx_in = c.data();
		o.ctx_size_in = static_cast<uint32_t>(c.size());
	}
	if (live_frames) {
		o.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
		o.batch_size = batch_size;
	}
	int rc;
	const auto t0 = std::chrono::steady_clock::now();
	{
		py::gil_scoped_release nogil;
		rc = bpf_prog_test_run_opts(prog_fd, &o);
	}
	const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	check_libbpf(rc, "BPF_PROG_TEST_RUN");
	return py::dict(py::arg("retval") = o.retval, py::arg("duration_ns") = o.duration, py::arg("wall_s") = wall);
}

bool c_contiguous(const py::buffer_info &b) {
	py::ssize_t want = b.itemsize;
	for (size_t i = b.ndim; i-- > 0;) {
		if (b.shape[i] != 1 && b.strides[i] != want) return false;
		want *= b.shape[i];
	}
	return true;
}

// keys: count * key_size bytes, values: count * value size (per-CPU maps:
// one round-up-to-8 value per possible CPU, as the kernel expects), both
// C-contiguous.
void update_batch(int map_fd, const py::buffer &keys, const py::buffer &values, uint32_t count, uint64_t elem_flags) {
	const py::buffer_info k = keys.request(), v = values.request();
	const MapShape s = [&] {
		bpf_map_info info{};
		uint32_t len = sizeof(info);
		check_libbpf(bpf_obj_get_info_by_fd(map_fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
		MapShape m;
		m.key_size = info.key_size;
		m.value_size = info.value_size;
		m.percpu = info.type == BPF_MAP_TYPE_PERCPU_HASH || info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
		           info.type == BPF_MAP_TYPE_PERCPU_ARRAY;
		return m;
	}();
	const size_t vstride = s.percpu ? ((s.value_size + 7) & ~7U) * static_cast<size_t>(possible_cpus()) : s.value_size;
	if (static_cast<size_t>(k.size * k.itemsize) != static_cast<size_t>(count) * s.key_size ||
	    static_cast<size_t>(v.size * v.itemsize) != count * vstride)
		throw SysError("update_batch: buffers do not hold count keys and values", EINVAL);
	if (!c_contiguous(k) || !c_contiguous(v)) throw SysError("update_batch: buffers must be C-contiguous", EINVAL);
	py::gil_scoped_release nogil;
	const char *kp = static_cast<const char *>(k.ptr), *vp = static_cast<const char *>(v.ptr);
	const uint32_t chunk = 1u << 16;
	for (uint32_t done = 0; done < count;) {
		uint32_t n = std::min(chunk, count - done);
		LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = elem_flags);
		check_libbpf(bpf_map_update_batch(map_fd, kp + static_cast<size_t>(done) * s.key_size,
		                                  vp + done * vstride, &n, &opts),
		             "bpf_map_update_batch");
		done += n;
	}
}

// The raw batch read of a whole map into buffers allocated (and touched)
// before the clock starts, `chunk` keys per call (0: the engine's choice).
// Nothing is decoded: the floor under read_flows for the same map.
py::dict lookup_batch_raw(int map_fd, uint32_t chunk) {
	bpf_map_info info{};
	uint32_t len = sizeof(info);
	check_libbpf(bpf_obj_get_info_by_fd(map_fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
	const bool percpu = info.type == BPF_MAP_TYPE_PERCPU_HASH || info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	const size_t vstride =
	    percpu ? ((info.value_size + 7) & ~7U) * static_cast<size_t>(possible_cpus()) : info.value_size;
	if (!chunk) chunk = std::clamp<uint32_t>(info.max_entries, 256, 8192); // as read_flows does
	uint64_t total = 0;
	double seconds = 0;
	{
		py::gil_scoped_release nogil;
		std::vector<char> keys(static_cast<size_t>(info.max_entries) * info.key_size, 1);
		std::vector<char> vals(static_cast<size_t>(info.max_entries) * vstride, 1);
		uint32_t token = 0;
		bool first = true;
		const auto t0 = std::chrono::steady_clock::now();
		for (;;) {
			uint32_t count = std::min<uint64_t>(chunk, info.max_entries - total);
			if (!count) break;
			LIBBPF_OPTS(bpf_map_batch_opts, opts);
			int rc = bpf_map_lookup_batch(map_fd, first ? nullptr : &token, &token,
			                              keys.data() + total * info.key_size, vals.data() + total * vstride,
			                              &count, &opts);
			if (rc < 0 && rc != -ENOENT) check_libbpf(rc, "bpf_map_lookup_batch");
			total += count;
			first = false;
			if (rc == -ENOENT) break;
		}
		seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	}
	return py::dict(py::arg("count") = total, py::arg("seconds") = seconds);
}

} // namespace

void bind_bench(py::module_ &m) {
	py::class_<BenchObject>(m, "_BenchObject")
	    .def(py::init([](const std::string &path, const std::map<std::string, py::bytes> &rodata,
	                     const std::map<std::string, uint32_t> &max_entries, bool xdp_frags) {
		         std::map<std::string, std::string> ro;
		         for (const auto &[k, v] : rodata) ro[k] = std::string(v);
		         py::gil_scoped_release nogil;
		         return std::make_unique<BenchObject>(path, ro, max_entries, xdp_frags);
	         }),
	         py::arg("path"), py::arg("rodata") = std::map<std::string, py::bytes>{},
	         py::arg("max_entries") = std::map<std::string, uint32_t>{}, py::arg("xdp_frags") = false)
	    .def("prog_fd", &BenchObject::prog_fd)
	    .def("map_fd", &BenchObject::map_fd)
	    .def("close", &BenchObject::close);

	py::class_<BenchLink>(m, "_BenchLink").def("close", &BenchLink::close);

	m.def("_bench_test_run", &test_run, py::arg("prog_fd"), py::arg("data"), py::arg("repeat") = 1,
	      py::arg("ctx") = py::bytes(), py::arg("live_frames") = false, py::arg("batch_size") = 0,
	      "BPF_PROG_TEST_RUN: {retval, duration_ns (kernel, per run), wall_s (the whole call)}.");
	m.def("_bench_update_batch", &update_batch, py::arg("map_fd"), py::arg("keys"), py::arg("values"),
	      py::arg("count"), py::arg("elem_flags") = 0);
	m.def(
	    "_bench_update",
	    [](int map_fd, const py::bytes &key, const py::bytes &value) {
		    const std::string k = key, v = value;
		    bpf_map_info info{};
		    uint32_t len = sizeof(info);
		    check_libbpf(bpf_obj_get_info_by_fd(map_fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
		    if (k.size() != info.key_size || v.size() != info.value_size)
			    throw SysError("update: key or value size differs from the map's", EINVAL);
		    check_libbpf(bpf_map_update_elem(map_fd, k.data(), v.data(), BPF_ANY), "bpf_map_update_elem");
	    },
	    py::arg("map_fd"), py::arg("key"), py::arg("value"), "One element (prog arrays take a program fd).");
	m.def("_bench_lookup_batch", &lookup_batch_raw, py::arg("map_fd"), py::arg("chunk") = 0);
	m.def(
	    "_bench_read_flows",
	    [](int map_fd) {
		    std::vector<flow_record> recs;
		    {
			    py::gil_scoped_release nogil;
			    recs = read_flows(map_fd, 0);
		    }
		    return to_numpy(std::move(recs), record_dtype());
	    },
	    py::arg("map_fd"), "read_flows of any flow map (timestamps as stored).");
	m.def(
	    "_bench_read_stats", [](int map_fd) { return to_numpy(read_stats(map_fd), stats_dtype()); },
	    py::arg("map_fd"));
	m.def("_bench_flows_fd", [](const TcCollector &c) { return c.flows_fd(); });
	m.def("_bench_flows_fd", [](const XdpCollector &c) { return c.flows_fd(); });
	m.def(
	    "_bench_attach_tcx",
	    [](int prog_fd, int ifindex, bool ingress) {
		    auto l = std::make_unique<BenchLink>();
		    std::shared_ptr<ClsactQdisc> none;
		    l->tc = std::make_unique<TcAttachment>(attach_tc(
		        prog_fd, ifindex, ingress ? TcDir::Ingress : TcDir::Egress, TcAttachMode::Tcx, none));
		    return l;
	    },
	    py::arg("prog_fd"), py::arg("ifindex"), py::arg("ingress") = true);
	m.def(
	    "_bench_attach_xdp",
	    [](int prog_fd, int ifindex, bool generic) {
		    LIBBPF_OPTS(bpf_link_create_opts, o, .flags = generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
		    auto l = std::make_unique<BenchLink>();
		    l->xdp = UniqueFd(check_libbpf(bpf_link_create(prog_fd, ifindex, BPF_XDP, &o), "attach XDP"));
		    return l;
	    },
	    py::arg("prog_fd"), py::arg("ifindex"), py::arg("generic") = false);
}

} // namespace pktstat
