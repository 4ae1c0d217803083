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

private:
	std::string op_;
	int err_;
};

// libbpf (1.x) returns -errno; plain syscalls return -1 and set errno.
inline int check(int rc, const std::string &op) {
	if (rc < 0) throw SysError(op, rc == -1 && errno ? errno : -rc);
	return rc;
}

inline int check_libbpf(int rc, const std::string &op) {
	if (rc < 0) throw SysError(op, -rc);
	return rc;
}

} // namespace pktstat
