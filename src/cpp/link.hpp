// link.hpp - the one owner of a libbpf link: move-only, destroying it detaches
// the program (bpf_link__destroy). Collectors keep their links in a vector
// and pop them in reverse order of attaching.
#pragma once

#include <bpf/libbpf.h>

#include <memory>

namespace pktstat {

struct LinkDeleter {
	void operator()(bpf_link *l) const noexcept { bpf_link__destroy(l); }
};
using Link = std::unique_ptr<bpf_link, LinkDeleter>;

} // namespace pktstat
