#include "replay_frame.hpp"

#include <linux/if_ether.h>

#include <algorithm>
#include <cstring>

namespace pktstat {
namespace {

// DLT values (libpcap's <pcap/dlt.h> cannot be included next to <linux/bpf.h>).
constexpr int kDltNull = 0;        // BSD loopback: AF in the capturing host's byte order
constexpr int kDltEn10mb = 1;      // Ethernet
constexpr int kDltRaw = 12;        // DLT_RAW on Linux and most systems
constexpr int kDltLinuxSll = 113;  // Linux cooked v1
constexpr int kDltRawOpenBsd = 14; // DLT_RAW on OpenBSD (Wireshark reads it as raw IP too)
constexpr int kLinktypeRaw = 101;  // LINKTYPE_RAW, should libpcap ever hand it over unmapped
constexpr int kDltLinuxSll2 = 276; // DLT_LINUX_SLL2 (libpcap >= 1.10)
constexpr int kDltIpv4 = 228;
constexpr int kDltIpv6 = 229;
constexpr int kDltLoop = 108; // DLT_LOOP (OpenBSD loopback: AF in network byte order)

// BSD address families for the loopback header (the AF_INET6 value differs
// between the BSDs: 24 NetBSD/OpenBSD/BSD/OS, 28 FreeBSD/DragonFly, 30 Darwin).
constexpr uint32_t kBsdAfInet = 2;
constexpr uint32_t kBsdAfInet6[] = {24, 28, 30};

inline uint16_t be16(const uint8_t *p) {
	return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

// Ethertype of a bare IP packet, from its version nibble (0: neither).
uint16_t ip_ethertype(const uint8_t *p, uint32_t caplen) {
	if (!caplen)
		return 0;
	switch (p[0] >> 4) {
	case 4:
		return ETH_P_IP;
	case 6:
		return ETH_P_IPV6;
	default:
		return 0;
	}
}

uint16_t bsd_af_ethertype(const uint8_t *p) {
	uint32_t af;
	std::memcpy(&af, p, 4);
	if (af & 0xffff0000u)
		af = __builtin_bswap32(af); // written by a host of the other byte order
	if (af == kBsdAfInet)
		return ETH_P_IP;
	for (uint32_t v6 : kBsdAfInet6)
		if (af == v6)
			return ETH_P_IPV6;
	return 0;
}

} // namespace

bool link_kind(int dlt, LinkKind &out) {
	switch (dlt) {
	case kDltEn10mb:
		out = LinkKind::Ethernet;
		return true;
	case kDltLinuxSll:
		out = LinkKind::Sll;
		return true;
	case kDltLinuxSll2:
		out = LinkKind::Sll2;
		return true;
	case kDltRaw:
	case kDltRawOpenBsd:
	case kLinktypeRaw:
		out = LinkKind::RawIp;
		return true;
	case kDltIpv4:
		out = LinkKind::Ipv4;
		return true;
	case kDltIpv6:
		out = LinkKind::Ipv6;
		return true;
	case kDltNull:
	case kDltLoop:
		out = LinkKind::BsdLoopback;
		return true;
	default:
		return false;
	}
}

FramePlan plan_frame(LinkKind kind, const uint8_t *p, uint32_t caplen, uint32_t max_data, uint8_t *buf) {
	FramePlan plan;
	const uint8_t *data = p;
	uint32_t len = caplen;
	uint32_t hdr = 0;   // link-layer header to strip
	uint16_t etype = 0; // ethertype of what follows it
	bool ethernet = false;
	switch (kind) {
	case LinkKind::Ethernet:
		ethernet = true;
		break;
	case LinkKind::Sll:
		hdr = 16;
		if (caplen >= hdr)
			etype = be16(p + 14);
		break;
	case LinkKind::Sll2:
		hdr = 20;
		if (caplen >= hdr)
			etype = be16(p);
		break;
	case LinkKind::RawIp:
		etype = ip_ethertype(p, caplen);
		break;
	case LinkKind::Ipv4:
		etype = ETH_P_IP;
		break;
	case LinkKind::Ipv6:
		etype = ETH_P_IPV6;
		break;
	case LinkKind::BsdLoopback:
		hdr = 4;
		if (caplen >= hdr)
			etype = bsd_af_ethertype(p);
		break;
	}
	if (ethernet) {
		if (caplen < ETH_HLEN)
			return plan;
	} else {
		if (caplen < hdr)
			return plan;
		uint32_t body = std::min(caplen - hdr, max_data - ETH_HLEN);
		std::memset(buf, 0, 12); // addresses: unknown, zero
		buf[12] = static_cast<uint8_t>(etype >> 8);
		buf[13] = static_cast<uint8_t>(etype);
		std::memcpy(buf + ETH_HLEN, p + hdr, body);
		data = buf;
		len = body + ETH_HLEN;
		caplen = caplen - hdr + ETH_HLEN; // for the clipped count
	}
	// The kernel checks that an IP ethertype is followed by a whole IP
	// header (skb->protocol is the outer ethertype: a VLAN tag skips this).
	const uint16_t outer = be16(data + 12);
	if ((outer == ETH_P_IP && len < ETH_HLEN + 20) || (outer == ETH_P_IPV6 && len < ETH_HLEN + 40))
		return plan;
	if (caplen > max_data) {
		plan.clipped = true;
		len = max_data;
	}
	plan.action = FramePlan::Run;
	plan.data = data;
	plan.len = len;
	return plan;
}

} // namespace pktstat
