#include "pcap_source.hpp"

#include <pcap/pcap.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "error.hpp"

namespace pktstat {

struct PcapSource::Impl {
	pcap_t *p = nullptr;
	~Impl() {
		if (p)
			pcap_close(p); // closes the FILE too
	}
};

PcapSource::PcapSource(const std::string &file) : impl_(std::make_unique<Impl>()) {
	const std::string path = file == "-" ? "standard input" : file; // for messages
	// "-" is standard input (a pipe from tcpdump -w -, say), as for tcpdump -r.
	std::FILE *fp = nullptr;
	if (file == "-") {
		int fd = ::dup(STDIN_FILENO);
		if (fd < 0)
			throw SysError("open standard input", errno);
		fp = ::fdopen(fd, "rb");
		if (!fp) {
			int err = errno;
			::close(fd);
			throw SysError("open standard input", err);
		}
	} else {
		fp = std::fopen(file.c_str(), "rb");
	}
	if (!fp)
		throw SysError("open " + path, errno);
	struct stat st {};
	int err = ::fstat(::fileno(fp), &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
	if (err) {
		std::fclose(fp);
		throw SysError("open " + path, err);
	}
	if (S_ISREG(st.st_mode) && st.st_size == 0) {
		std::fclose(fp);
		throw CaptureError(CaptureError::Format, path + ": empty file, not a pcap or pcapng capture");
	}
	size_ = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	impl_->p = pcap_fopen_offline_with_tstamp_precision(fp, PCAP_TSTAMP_PRECISION_NANO, errbuf);
	if (!impl_->p) {
		std::fclose(fp);
		throw CaptureError(CaptureError::Format,
		                   path + ": not a pcap or pcapng capture (" + errbuf + ")");
	}
	dlt_ = pcap_datalink(impl_->p);
}

PcapSource::~PcapSource() = default;

uint64_t PcapSource::timestamp_ns(int64_t sec, int64_t frac_ns) {
	// A pcap record's seconds are an unsigned 32-bit field (as Wireshark
	// reads it), which libpcap hands over sign-extended: 0xffffff14 arrives
	// as -236 and is 2106-02-07, not 1969.
	if (sec < 0 && sec >= INT32_MIN)
		sec += int64_t{1} << 32;
	if (sec < 0)
		return kMaxTimestampNs; // pcapng seconds past 2^63
	// The fraction is a record field too (a corrupt one may exceed a second,
	// or be negative): the sum is clamped to [0, kMaxTimestampNs].
	const __int128 ns = static_cast<__int128>(sec) * 1000000000 + frac_ns;
	if (ns < 0)
		return 0;
	if (ns > static_cast<__int128>(kMaxTimestampNs))
		return kMaxTimestampNs;
	return static_cast<uint64_t>(ns);
}

int PcapSource::next(const uint8_t *&data, uint32_t &caplen, uint32_t &wire_len, uint64_t &ts_ns) {
	pcap_pkthdr *h;
	const u_char *d;
	int rc = pcap_next_ex(impl_->p, &h, &d);
	if (rc == 1) {
		data = d;
		caplen = h->caplen;
		wire_len = h->len;
		// ns: the file was opened with nanosecond precision
		ts_ns = timestamp_ns(h->ts.tv_sec, h->ts.tv_usec);
		return 1;
	}
	if (rc == PCAP_ERROR_BREAK)
		return 0;
	error_ = pcap_geterr(impl_->p);
	return -1;
}

uint64_t PcapSource::offset() const {
	std::FILE *f = pcap_file(impl_->p);
	long off = f ? std::ftell(f) : -1;
	return off < 0 ? 0 : static_cast<uint64_t>(off);
}

std::string PcapSource::dlt_name(int dlt) {
	const char *s = pcap_datalink_val_to_name(dlt);
	return s ? s : "";
}

std::string PcapSource::dlt_description(int dlt) {
	const char *s = pcap_datalink_val_to_description(dlt);
	return s ? s : "";
}

bool capture_time_range(const std::string &path, uint64_t &earliest, uint64_t &latest) {
	PcapSource src(path);
	const uint8_t *data;
	uint32_t caplen, wire;
	uint64_t ts;
	bool any = false;
	while (src.next(data, caplen, wire, ts) == 1) {
		if (!any || ts < earliest)
			earliest = ts;
		if (!any || ts > latest)
			latest = ts;
		any = true;
	}
	return any;
}

} // namespace pktstat
