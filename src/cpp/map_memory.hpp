// map_memory.hpp - what a flow table costs the kernel, and whether the kernel
// can give it, checked before the maps are created: a table that does not
// fit is refused with one line instead of stalling the machine, and a large
// one is announced (creating it takes seconds to minutes, during which the
// process cannot be interrupted).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

struct bpf_map;
struct bpf_object;

namespace pktstat {

// The flow table (--max-entries) needs more kernel memory than there is.
// The message is complete; Python sees _core.TableTooLarge, a usage error.
class TableTooLarge : public std::runtime_error {
      public:
	using std::runtime_error::runtime_error;
};

// The kernel memory of a map as the kernel accounts it (the "memlock" of
// bpftool map show and /proc/<pid>/fdinfo) once created, for preallocated
// hash maps (per-CPU values count once per possible CPU) and arrays; 0 for
// the types not estimated.
uint64_t map_kernel_bytes(const bpf_map *map);

// The memory the kernel can still give this process: MemAvailable, or less
// where a memory cgroup limit (v1 or v2, on any ancestor) leaves less.
// `source` says which ("MemAvailable" or "the memory cgroup limit of <path>").
uint64_t kernel_memory_available(std::string *source);

// Before loading `obj`: its map "flows" (if it has one) must fit in the
// memory available (else TableTooLarge); if it is large, say so (notice).
void check_flow_table(const bpf_object *obj);

// One line for the user while the engine does something long (the bindings
// route it to Python logging; by default nowhere).
using NoticeSink = void (*)(const std::string &);
void set_notice_sink(NoticeSink sink);
void notice(const std::string &line);

// "1.5 GB", "512 MB": decimal units, as the rest of the output.
std::string human_bytes(uint64_t bytes);

} // namespace pktstat
