// fd.hpp - a move-only owner of a file descriptor.
#pragma once

#include <unistd.h>

#include <utility>

namespace pktstat {

class UniqueFd {
      public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) noexcept : fd_(fd) {}
	UniqueFd(UniqueFd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
	UniqueFd &operator=(UniqueFd &&o) noexcept {
		if (this != &o) {
			reset();
			fd_ = std::exchange(o.fd_, -1);
		}
		return *this;
	}
	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	~UniqueFd() { reset(); }

	int get() const noexcept { return fd_; }
	explicit operator bool() const noexcept { return fd_ >= 0; }
	void reset() noexcept {
		if (fd_ >= 0)
			::close(fd_);
		fd_ = -1;
	}

      private:
	int fd_ = -1;
};

} // namespace pktstat
