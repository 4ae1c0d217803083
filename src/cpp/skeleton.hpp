// skeleton.hpp - RAII owner of a libbpf skeleton (bpftool gen skeleton).
//
// Skeleton<tc_bpf> opens the object on construction; the caller edits rodata
// and map sizes, then calls load(), which first checks that the flow table
// fits in the memory the kernel can give (map_memory.hpp). Destruction destroys the skeleton, which
// closes its maps, programs and any links the skeleton itself made.
#pragma once

#include <memory>
#include <string>

#include "error.hpp"
#include "map_memory.hpp"
#include "test_knobs.hpp"

namespace pktstat {

template <class Skel> struct SkelOps; // specialised next to each skeleton

template <class Skel> class Skeleton {
      public:
	// Every engine object opens its skeleton first: the test seam is read here.
	Skeleton() : faults_(load_test_faults()), skel_(SkelOps<Skel>::open()) {
		if (!skel_)
			throw SysError(std::string("open BPF object ") + SkelOps<Skel>::name,
			               errno ? errno : EINVAL);
	}
	Skeleton(Skeleton &&) noexcept = default;
	Skeleton &operator=(Skeleton &&) noexcept = default;

	void load() {
		const std::string op = std::string("load BPF object ") + SkelOps<Skel>::name;
		if (forced_missing("bpf"))
			throw SysError(op, ENOSYS); // as a kernel without CONFIG_BPF_SYSCALL
		check_flow_table(skel_->obj);       // before the maps are made: refuse one that cannot fit
		check_libbpf(SkelOps<Skel>::load(skel_.get()), op);
	}

	Skel *operator->() const noexcept { return skel_.get(); }
	Skel *get() const noexcept { return skel_.get(); }

      private:
	struct Deleter {
		void operator()(Skel *s) const noexcept { SkelOps<Skel>::destroy(s); }
	};
	std::shared_ptr<const TestFaults> faults_; // read at construction (test_knobs.hpp)
	std::unique_ptr<Skel, Deleter> skel_;
};

#define PKTSTAT_SKEL_OPS(T)                                                                                  \
	template <> struct SkelOps<T> {                                                                      \
		static constexpr const char *name = #T;                                                      \
		static T *open() { return T##__open(); }                                                     \
		static int load(T *s) { return T##__load(s); }                                               \
		static void destroy(T *s) { T##__destroy(s); }                                               \
	}

} // namespace pktstat
