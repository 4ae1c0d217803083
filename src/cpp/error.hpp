// error.hpp - exceptions carrying the failed operation and its errno.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace pktstat {

// A system or libbpf call failed. `err` is a positive errno value.
class SysError : public std::runtime_error {
      public:
	SysError(std::string op, int err)
	    : std::runtime_error(op + ": " + std::strerror(err)), op_(std::move(op)), err_(err) {}
	const std::string &op() const noexcept { return op_; }
	int err() const noexcept { return err_; }

      protected:
	SysError(std::string op, int err, const std::string &message)
	    : std::runtime_error(message), op_(std::move(op)), err_(err) {}

      private:
	std::string op_;
	int err_;
};

// The kernel lacks something a mode needs. The message is complete (what is
// missing, since which kernel, what to do instead); Python sees it as
// _core.FeatureMissing and the CLI exits with 69.
class FeatureMissing : public SysError {
      public:
	explicit FeatureMissing(const std::string &message)
	    : SysError("feature probe", EOPNOTSUPP, message) {}
};

// libbpf (1.x) returns -errno; plain syscalls return -1 and set errno.
inline int check(int rc, const std::string &op) {
	if (rc < 0)
		throw SysError(op, rc == -1 && errno ? errno : -rc);
	return rc;
}

inline int check_libbpf(int rc, const std::string &op) {
	if (rc < 0)
		throw SysError(op, -rc);
	return rc;
}

} // namespace pktstat
