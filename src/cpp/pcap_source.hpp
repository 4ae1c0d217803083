// pcap_source.hpp - reading pcap and pcapng files with libpcap.
//
// Kept in its own translation unit: libpcap's <pcap/bpf.h> and the kernel's
// <linux/bpf.h> define the same structs and cannot meet in one file.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace pktstat {

// A capture file problem (not a system error): unreadable format, unsupported
// link type. `kind` says which, for the caller's exit code.
class CaptureError : public std::runtime_error {
      public:
	enum Kind { Format, LinkType };
	CaptureError(Kind k, const std::string &msg) : std::runtime_error(msg), kind_(k) {}
	Kind kind() const noexcept { return kind_; }

      private:
	Kind kind_;
};

class PcapSource {
      public:
	// Opens the file ("-": standard input; timestamps in nanoseconds). Throws SysError when it
	// cannot be opened or is a directory, CaptureError when it is empty or
	// libpcap does not recognise it.
	explicit PcapSource(const std::string &path);
	~PcapSource();
	PcapSource(const PcapSource &) = delete;
	PcapSource &operator=(const PcapSource &) = delete;

	int dlt() const noexcept { return dlt_; }

	// The next record: 1 = a frame, 0 = end of file, -1 = the file is damaged
	// here (error() says how).
	int next(const uint8_t *&data, uint32_t &caplen, uint32_t &wire_len, uint64_t &ts_ns);
	const std::string &error() const noexcept { return error_; }

	uint64_t offset() const; // bytes of the file consumed so far (approximate: buffered)

	// The latest timestamp a record can have: INT64_MAX ns (2262-04-11), the
	// end of NumPy's datetime64[ns], which first/last seen become; far below
	// UINT64_MAX, Replayer::advance's "all frames".
	static constexpr uint64_t kMaxTimestampNs = INT64_MAX;
	// A record's time as libpcap gives it (seconds, nanoseconds) -> Unix ns,
	// 32-bit pcap seconds read unsigned, clamped to [0, kMaxTimestampNs].
	static uint64_t timestamp_ns(int64_t sec, int64_t frac_ns);
	uint64_t size() const noexcept { return size_; }

	// libpcap's short name and description of a DLT value ("" when unknown).
	static std::string dlt_name(int dlt);
	static std::string dlt_description(int dlt);

      private:
	struct Impl;
	std::unique_ptr<Impl> impl_;
	int dlt_ = 0;
	uint64_t size_ = 0;
	std::string error_;
};

// The earliest and latest timestamps of a file's records (up to damage, if
// any), in Unix ns; false where it has no record. One pass of libpcap over the
// file: interval streams of a file whose timestamps go backwards start at
// its earliest frame, as its report does.
bool capture_time_range(const std::string &path, uint64_t &earliest, uint64_t &latest);

} // namespace pktstat
