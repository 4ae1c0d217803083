// bind_bench.cpp - the benchmark module _bench_core (bench/cpp/CMakeLists.txt;
// built for make bench and make test, never installed). It also holds what
// only tests read from the engine (the compiled record layout, a record
// filled field by field, the flow.h constants, sock_diag's view, cgroup ids).
// For the benchmarks:
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

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bind_common.hpp"
#include "cgroup_collector.hpp"
#include "cgroup_paths.hpp"
#include "error.hpp"
#include "fd.hpp"
#include "flow_table.hpp"
#include "process_collector.hpp"
#include "replay.hpp"
#include "sock_scan.hpp"
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
		if (!obj_)
			throw SysError("open " + path, errno ? errno : EINVAL);
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
		if (obj_)
			bpf_object__close(obj_);
		obj_ = nullptr;
	}

	int prog_fd(const std::string &name) const {
		bpf_program *p = bpf_object__find_program_by_name(live(), name.c_str());
		if (!p)
			throw SysError("no program " + name, ENOENT);
		return bpf_program__fd(p);
	}

	int map_fd(const std::string &name) const {
		bpf_map *m = bpf_object__find_map_by_name(live(), name.c_str());
		if (!m)
			throw SysError("no map " + name, ENOENT);
		return bpf_map__fd(m);
	}

      private:
	bpf_object *live() const {
		if (!obj_)
			throw SysError("BPF object closed", EBADF);
		return obj_;
	}

	void configure(const std::map<std::string, std::string> &rodata,
	               const std::map<std::string, uint32_t> &max_entries, bool xdp_frags) {
		for (const auto &[name, n] : max_entries) {
			bpf_map *m = bpf_object__find_map_by_name(obj_, name.c_str());
			if (!m)
				throw SysError("no map " + name, ENOENT);
			check_libbpf(bpf_map__set_max_entries(m, n), "set max_entries of " + name);
		}
		if (xdp_frags) {
			bpf_program *p;
			bpf_object__for_each_program(p, obj_) {
				if (bpf_program__type(p) == BPF_PROG_TYPE_XDP)
					check_libbpf(bpf_program__set_flags(p, bpf_program__flags(p) |
					                                           BPF_F_XDP_HAS_FRAGS),
					             "set BPF_F_XDP_HAS_FRAGS");
			}
		}
		if (rodata.empty())
			return;
		bpf_map *ro = nullptr, *m;
		bpf_object__for_each_map(m, obj_) {
			const char *n = bpf_map__name(m);
			size_t len = std::strlen(n);
			if (bpf_map__is_internal(m) && len >= 7 && std::strcmp(n + len - 7, ".rodata") == 0)
				ro = m;
		}
		const btf *b = bpf_object__btf(obj_);
		const int sec_id = b ? btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC) : -1;
		if (!ro || sec_id < 0)
			throw SysError("the object has no .rodata to set", ENOENT);
		size_t size = 0;
		const void *init = bpf_map__initial_value(ro, &size);
		std::vector<char> data(static_cast<const char *>(init),
		                       static_cast<const char *>(init) + size);
		const btf_type *sec = btf__type_by_id(b, sec_id);
		for (const auto &[name, bytes] : rodata) {
			const btf_var_secinfo *vi = btf_var_secinfos(sec);
			bool found = false;
			for (int i = 0; i < btf_vlen(sec); ++i, ++vi) {
				const btf_type *var = btf__type_by_id(b, vi->type);
				if (name != btf__name_by_offset(b, var->name_off))
					continue;
				if (bytes.size() != vi->size)
					throw SysError(name + " is " + std::to_string(vi->size) +
					                   " bytes, not " + std::to_string(bytes.size()),
					               EINVAL);
				std::memcpy(data.data() + vi->offset, bytes.data(), bytes.size());
				found = true;
				break;
			}
			if (!found)
				throw SysError("no setting " + name + " in .rodata", ENOENT);
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
	return py::dict(py::arg("retval") = o.retval, py::arg("duration_ns") = o.duration,
	                py::arg("wall_s") = wall);
}

// How far apart two CPUs' caches are: threads pinned to cpu_a and cpu_b pass
// a flag back and forth (plain spinning, no pause), `batches` batches of 100
// round trips; the median batch's ns per round trip. Two threads of one core
// pass it in tens of ns, cores of other dies in hundreds (a hypervisor may
// move vCPUs between such places while a benchmark runs).
double cpu_round_trip_ns(int cpu_a, int cpu_b, int batches) {
	constexpr int per_batch = 100;
	alignas(64) std::atomic<int> flag{0}; // 1: a has passed it; 0: b has
	std::atomic<int> ready{0}, failed{0};
	std::vector<double> ns(static_cast<size_t>(std::max(batches, 1)));
	// Both threads pinned, or neither plays.
	const auto pin = [&](int cpu) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
			failed.store(err);
		ready.fetch_add(1);
		while (ready.load() < 2) {
		}
		return !failed.load();
	};
	{
		py::gil_scoped_release nogil;
		std::thread b([&] {
			if (!pin(cpu_b))
				return;
			for (size_t i = 0; i < ns.size() * per_batch; ++i) {
				while (flag.load(std::memory_order_acquire) != 1) {
				}
				flag.store(0, std::memory_order_release);
			}
		});
		std::thread a([&] {
			if (!pin(cpu_a))
				return;
			for (auto &t : ns) {
				const auto t0 = std::chrono::steady_clock::now();
				for (int i = 0; i < per_batch; ++i) {
					flag.store(1, std::memory_order_release);
					while (flag.load(std::memory_order_acquire) != 0) {
					}
				}
				t = std::chrono::duration<double, std::nano>(
					std::chrono::steady_clock::now() - t0)
				        .count() /
				    per_batch;
			}
		});
		a.join();
		b.join();
	}
	if (int err = failed.load())
		throw SysError("pthread_setaffinity_np", err);
	std::nth_element(ns.begin(), ns.begin() + ns.size() / 2, ns.end());
	return ns[ns.size() / 2];
}

bool c_contiguous(const py::buffer_info &b) {
	py::ssize_t want = b.itemsize;
	for (size_t i = b.ndim; i-- > 0;) {
		if (b.shape[i] != 1 && b.strides[i] != want)
			return false;
		want *= b.shape[i];
	}
	return true;
}

// keys: count * key_size bytes, values: count * value size (per-CPU maps:
// one round-up-to-8 value per possible CPU, as the kernel expects), both
// C-contiguous.
void update_batch(int map_fd, const py::buffer &keys, const py::buffer &values, uint32_t count,
                  uint64_t elem_flags) {
	const py::buffer_info k = keys.request(), v = values.request();
	const MapShape s = [&] {
		bpf_map_info info{};
		uint32_t len = sizeof(info);
		check_libbpf(bpf_obj_get_info_by_fd(map_fd, &info, &len), "bpf_obj_get_info_by_fd(map)");
		MapShape m;
		m.key_size = info.key_size;
		m.value_size = info.value_size;
		m.percpu = info.type == BPF_MAP_TYPE_PERCPU_HASH ||
		           info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
		           info.type == BPF_MAP_TYPE_PERCPU_ARRAY;
		return m;
	}();
	const size_t vstride =
	    s.percpu ? ((s.value_size + 7) & ~7U) * static_cast<size_t>(possible_cpus()) : s.value_size;
	if (static_cast<size_t>(k.size * k.itemsize) != static_cast<size_t>(count) * s.key_size ||
	    static_cast<size_t>(v.size * v.itemsize) != count * vstride)
		throw SysError("update_batch: buffers do not hold count keys and values", EINVAL);
	if (!c_contiguous(k) || !c_contiguous(v))
		throw SysError("update_batch: buffers must be C-contiguous", EINVAL);
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
	const bool percpu =
	    info.type == BPF_MAP_TYPE_PERCPU_HASH || info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	const size_t vstride =
	    percpu ? ((info.value_size + 7) & ~7U) * static_cast<size_t>(possible_cpus()) : info.value_size;
	if (!chunk)
		chunk = std::clamp<uint32_t>(info.max_entries, 256, 8192); // as read_flows does
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
			if (!count)
				break;
			LIBBPF_OPTS(bpf_map_batch_opts, opts);
			int rc = bpf_map_lookup_batch(map_fd, first ? nullptr : &token, &token,
			                              keys.data() + total * info.key_size,
			                              vals.data() + total * vstride, &count, &opts);
			if (rc < 0 && rc != -ENOENT)
				check_libbpf(rc, "bpf_map_lookup_batch");
			total += count;
			first = false;
			if (rc == -ENOENT)
				break;
		}
		seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	}
	return py::dict(py::arg("count") = total, py::arg("seconds") = seconds);
}

// A record with a distinct value in every field, filled through the C struct:
// lets a test prove the NumPy dtype decodes what C++ wrote.
py::bytes test_record() {
	flow_record r{};
	for (int i = 0; i < 16; ++i) {
		r.key.tuple.saddr[i] = static_cast<__u8>(i + 1);
		r.key.tuple.daddr[i] = static_cast<__u8>(0xf0 - i);
	}
	r.key.tuple.sport = 0x1234;
	r.key.tuple.dport = 0xabcd;
	r.key.tuple.proto = 17;
	r.key.tuple.dir = FLOW_DIR_EGRESS;
	r.key.tuple.ipver = 6;
	r.key.tuple.kind = FLOW_KIND_RETRANSMIT;
	r.key.tuple.ifindex = 0x01020304;
	r.key.pid = 0x0badcafe;
	r.key.cgroup_id = 0x1122334455667788ULL;
	std::memcpy(r.key.comm, "comm-0123456789", 16);
	r.value.packets = 0x0102030405060708ULL;
	r.value.bytes = 0x1112131415161718ULL;
	r.value.first_seen_ns = 1700000000123456789ULL;
	r.value.last_seen_ns = 1700000001987654321ULL;
	r.value.syn_packets = 0x21222324;
	r.value.fin_packets = 0x31323334;
	r.value.rst_packets = 0x41424344;
	r.value.tcp_flags = TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_CWR;
	r.value.app = L7_APP_WIREGUARD;
	r.value.app_tries = L7_DONE;
	r.value.health.retrans_packets = 0x51525354;
	r.value.health.rtt_samples = 0x61626364;
	r.value.health.retrans_bytes = 0x7172737475767778ULL;
	r.value.health.rtt_sum_ns = 3000000;
	r.value.health.rtt_min_ns = 500000;
	r.value.health.rtt_max_ns = 1500000;
	return py::bytes(reinterpret_cast<const char *>(&r), sizeof(r));
}

} // namespace

void register_bench(py::module_ &m) {
	// What the tests check the package's record dtype and the kernel's
	// counting against (the same flow.h, compiled by the same build).
	m.def(
	    "record_layout", [] { return layout_of(record_fields(), sizeof(flow_record)); },
	    "Offsets and sizes of flow_record fields, as compiled.");
	m.def("stats_layout", [] { return layout_of(stats_fields(), sizeof(dir_stats)); });
	m.def("_test_record", &test_record);
	m.attr("FLOW_DIR_INGRESS") = static_cast<int>(FLOW_DIR_INGRESS);
	m.attr("FLOW_DIR_EGRESS") = static_cast<int>(FLOW_DIR_EGRESS);
	m.attr("FLOW_DIR_NONE") = static_cast<int>(FLOW_DIR_NONE);
	m.attr("FLOW_KIND_DATA") = static_cast<int>(FLOW_KIND_DATA);
	m.attr("FLOW_KIND_RETRANSMIT") = static_cast<int>(FLOW_KIND_RETRANSMIT);
	m.def("possible_cpus", &possible_cpus);
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
			                      py::arg("cgroup_id") = s.cgroup_id,
			                      py::arg("has_cgroup") = s.has_cgroup,
			                      py::arg("netns_cookie") = s.netns_cookie,
			                      py::arg("sport") = s.sport, py::arg("protocol") = s.protocol,
			                      py::arg("state") = s.state, py::arg("family") = s.family));
		    return l;
	    },
	    "Every TCP/UDP/UDP-Lite socket sock_diag lists in every network namespace (debugging, tests).");
	m.def("_bench_cpu_round_trip_ns", &cpu_round_trip_ns, py::arg("cpu_a"), py::arg("cpu_b"),
	      py::arg("batches") = 2000,
	      "Median ns per round trip of a flag between threads pinned to two CPUs (how far apart "
	      "their caches are).");
	m.def("xdp_kernel_has_buff_len", &xdp_kernel_has_buff_len,
	      "The kernel has bpf_xdp_get_buff_len (XdpCollector then counts whole multi-buffer frames).");
	py::class_<BenchObject>(m, "_BenchObject")
	    .def(py::init([](const std::string &path, const std::map<std::string, py::bytes> &rodata,
	                     const std::map<std::string, uint32_t> &max_entries, bool xdp_frags) {
			 std::map<std::string, std::string> ro;
			 for (const auto &[k, v] : rodata)
				 ro[k] = std::string(v);
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
		    check_libbpf(bpf_map_update_elem(map_fd, k.data(), v.data(), BPF_ANY),
		                 "bpf_map_update_elem");
	    },
	    py::arg("map_fd"), py::arg("key"), py::arg("value"),
	    "One element (prog arrays take a program fd).");
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
	m.def(
	    "_bench_count_flows",
	    [](int map_fd) {
		    py::gil_scoped_release nogil;
		    return count_entries(map_fd);
	    },
	    py::arg("map_fd"), "Entries of a flow map, counted by iterating its keys.");
	// The engine's Replayer (a _core object) fed frames from memory: the
	// parser tests' input, and the largest frame it takes.
	m.def(
	    "replay_frames",
	    [](Replayer &r, int dlt, const std::vector<py::bytes> &frames, const std::vector<uint64_t> &ts_ns,
	       const std::vector<uint32_t> &wire_len) {
		    std::vector<std::string> f;
		    f.reserve(frames.size());
		    for (const auto &b : frames)
			    f.emplace_back(b);
		    py::gil_scoped_release nogil;
		    r.replay_frames(dlt, f, ts_ns, wire_len);
	    },
	    py::arg("replayer"), py::arg("dlt"), py::arg("frames"),
	    py::arg("ts_ns") = std::vector<uint64_t>{}, py::arg("wire_len") = std::vector<uint32_t>{},
	    "Run in-memory frames through `replayer` as if read from a capture of link type `dlt`.");
	m.def(
	    "replay_max_data", [](const Replayer &r) { return r.max_data(); }, py::arg("replayer"),
	    "The largest test-run data `replayer` accepts.");
	// cgroup mode's socket-cookie -> owner map and the owner flag bits, for
	// tests of the owners' lifetime (tests/test_drain.py)
	m.def(
	    "cgroup_owners",
	    [](const CgroupCollector &c) {
		    std::vector<CgroupCollector::OwnerEntry> v;
		    {
			    py::gil_scoped_release nogil;
			    v = c.owners();
		    }
		    py::dict d;
		    for (const auto &e : v)
			    d[py::int_(e.cookie)] =
				py::dict(py::arg("pid") = e.owner.pid, py::arg("flags") = e.owner.flags,
			                 py::arg("comm") = py::bytes(
					     e.owner.comm, strnlen(e.owner.comm, sizeof(e.owner.comm))));
		    return d;
	    },
	    py::arg("collector"),
	    "The socket-cookie -> owner map of a cgroup collector: {cookie: {pid, flags, comm}}.");
	// process mode's struct sock * -> last sender map, for tests of its
	// entries' lifetime (tests/test_process_owners.py)
	m.def(
	    "process_owners",
	    [](const ProcessCollector &c) {
		    std::vector<std::pair<uint64_t, proc_owner>> v;
		    {
			    py::gil_scoped_release nogil;
			    const int fd = c.owners_fd();
			    uint64_t key = 0, next = 0;
			    const uint64_t *prev = nullptr;
			    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
				    proc_owner o{};
				    if (bpf_map_lookup_elem(fd, &next, &o) == 0)
					    v.emplace_back(next, o);
				    key = next;
				    prev = &key;
			    }
		    }
		    py::dict d;
		    for (const auto &[sk, o] : v)
			    d[py::int_(sk)] = py::dict(
				py::arg("pid") = o.pid, py::arg("cgroup_id") = o.cgroup_id,
				py::arg("comm") = py::bytes(o.comm, strnlen(o.comm, sizeof(o.comm))));
		    return d;
	    },
	    py::arg("collector"),
	    "The struct sock * -> last sender map of a process collector: {sock: {pid, cgroup_id, comm}}.");
	py::dict flags;
	flags["shared"] = static_cast<int>(OWNER_SHARED);
	flags["released"] = static_cast<int>(OWNER_RELEASED);
	flags["unclaimed"] = static_cast<int>(OWNER_UNCLAIMED);
	flags["inherited"] = static_cast<int>(OWNER_INHERITED);
	flags["scanned"] = static_cast<int>(OWNER_SCANNED);
	flags["created"] = static_cast<int>(OWNER_CREATED);
	flags["claimed"] = static_cast<int>(OWNER_CLAIMED);
	m.attr("OWNER_FLAGS") = flags;
	m.def("_bench_flows_fd", [](const TcCollector &c) { return c.flows_fd(); });
	m.def("_bench_flows_fd", [](const XdpCollector &c) { return c.flows_fd(); });
	m.def(
	    "_bench_replay_fds",
	    [](const Replayer &r) {
		    return std::vector<int>{r.drainer().side_fd(0), r.drainer().side_fd(1)};
	    },
	    py::arg("replayer"), "The two sides of a Replayer's flow table (map fds).");
	m.def(
	    "_bench_replay_prog_fd", [](const Replayer &r) { return r.prog_fd(); }, py::arg("replayer"),
	    "The program a Replayer runs every frame through (for a rotator's tail call).");
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
		    LIBBPF_OPTS(bpf_link_create_opts, o,
		                .flags = generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
		    auto l = std::make_unique<BenchLink>();
		    l->xdp =
			UniqueFd(check_libbpf(bpf_link_create(prog_fd, ifindex, BPF_XDP, &o), "attach XDP"));
		    return l;
	    },
	    py::arg("prog_fd"), py::arg("ifindex"), py::arg("generic") = false);
}

} // namespace pktstat

PYBIND11_MODULE(_bench_core, m) {
	m.doc() = "pktstat-bpf benchmark hooks (bench/, tests; not part of the package)";
	// _bench_flows_fd takes the engine's collectors: their types are _core's.
	pybind11::module_::import("pktstat_bpf._core");
	pktstat::register_bench(m);
}
