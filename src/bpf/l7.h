/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * l7.h - the application signatures, written to be shared verbatim by the
 * eBPF packet programs (through l7_probe.bpf.h) and the
 * user-space test harness (tests/l7_harness.c, built by
 * tests/test_l7_signatures.py with the system compiler); the C++ engine
 * takes only enum l7_app. Plain C, fixed-width types, no helper calls.
 *
 * A signature looks at the first L7_WINDOW bytes of a TCP or UDP payload as
 * two big-endian 64-bit words (w0 = bytes 0-7, w1 = bytes 8-15): it matches
 * when (w0 & m0) == v0 and (w1 & m1) == v1, at least `need` bytes were
 * captured, the byte at `rng_at` lies in [rng_lo, rng_hi] (rng_at 0xff: no
 * range), the payload length (from the IP header, not the capture) equals
 * `len_eq` when that is not 0, and, with L7_LENPFX, the first two bytes hold
 * the payload length minus two (DNS over TCP). The first match wins, so
 * narrow signatures come before wide ones.
 */
#ifndef PKTSTAT_L7_H
#define PKTSTAT_L7_H

#include <linux/types.h>

/* flow_value.app: 0 = not looked at yet, 1 = looked, not recognised (the
 * budget of payload packets spent), then the labels. */
enum l7_app {
	L7_APP_NONE = 0,
	L7_APP_UNKNOWN = 1,
	L7_APP_HTTP = 2,
	L7_APP_TLS = 3,
	L7_APP_QUIC = 4,
	L7_APP_SSH = 5,
	L7_APP_RDP = 6,
	L7_APP_POSTGRES = 7,
	L7_APP_MQTT = 8,
	L7_APP_WIREGUARD = 9,
	L7_APP_MEMCACHED = 10,
	L7_APP_DTLS = 11,
	L7_APP_DNS = 12,
	L7_APP_SMTP = 13,
	L7_APP_IMAP = 14,
	L7_APP_POP3 = 15,
	L7_APP_NR = 16,
};

/* Payload packets a flow is examined on before it is "unknown": a TCP
 * client's first segment may be its own banner-less request, the server's
 * first may be a bare ACK with data piggybacked later, and a UDP flow's
 * first datagram may be a retransmission or a stray; three cover the
 * handshakes of every signature here while an established flow stops
 * paying after its third payload packet at the latest. */
#define L7_BUDGET 3
/* flow_value.app_tries once a label is set: never examined again. */
#define L7_DONE 0xff
#define L7_WINDOW 16

#define L7_TCP 1 /* struct l4_at.l7 (parse.bpf.h), struct l7_sig.l4 */
#define L7_UDP 2
#define L7_LENPFX 1
#define L7_NORANGE 0xff

#ifndef __cplusplus /* the engine needs only the labels */
struct l7_sig {
	__u64 v0, m0, v1, m1;
	__u16 len_eq; /* payload length, 0: any */
	__u8 app;     /* enum l7_app */
	__u8 l4;      /* L7_TCP, L7_UDP */
	__u8 need;    /* bytes captured at least */
	__u8 rng_at, rng_lo, rng_hi;
	__u8 flags; /* L7_LENPFX */
	__u8 _pad[7];
};

/* A prefix of up to 8 ASCII bytes as v0 and its mask (string literal). */
#define L7_B(s, i)                                                                                           \
	((__u64)(sizeof(s) - 1 > (i) ? (__u8)(s)[(i) < sizeof(s) - 1 ? (i) : 0] : 0) << (56 - 8 * (i)))
#define L7_M(s, i) ((__u64)(sizeof(s) - 1 > (i) ? 0xff : 0) << (56 - 8 * (i)))
#define L7_STRV(s)                                                                                           \
	(L7_B(s, 0) | L7_B(s, 1) | L7_B(s, 2) | L7_B(s, 3) | L7_B(s, 4) | L7_B(s, 5) | L7_B(s, 6) |          \
	 L7_B(s, 7))
#define L7_STRM(s)                                                                                           \
	(L7_M(s, 0) | L7_M(s, 1) | L7_M(s, 2) | L7_M(s, 3) | L7_M(s, 4) | L7_M(s, 5) | L7_M(s, 6) |          \
	 L7_M(s, 7))
#define L7_TEXT(a, proto, s)                                                                                 \
	{                                                                                                    \
		.v0 = L7_STRV(s), .m0 = L7_STRM(s), .app = (a), .l4 = (proto), .need = sizeof(s) - 1,        \
		.rng_at = L7_NORANGE                                                                         \
	}

static const struct l7_sig l7_sigs[] = {
    /* HTTP/1.x requests, responses, the h2c preface */
    L7_TEXT(L7_APP_HTTP, L7_TCP, "GET "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "POST "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "HEAD "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "PUT "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "DELETE "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "OPTIONS "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "PATCH "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "CONNECT "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "TRACE "),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "HTTP/1."),
    L7_TEXT(L7_APP_HTTP, L7_TCP, "PRI * HT"),
    /* TLS record: type 0x14-0x17, version 3.0-3.4 */
    {.v0 = 0x1403000000000000ULL,
     .m0 = 0xfcff000000000000ULL,
     .app = L7_APP_TLS,
     .l4 = L7_TCP,
     .need = 5,
     .rng_at = 2,
     .rng_lo = 0,
     .rng_hi = 4},
    /* SSH identification string */
    L7_TEXT(L7_APP_SSH, L7_TCP, "SSH-"),
    /* RDP: TPKT version 3, COTP connection request (0xe0) or confirm (0xd0) */
    {.v0 = 0x0300000000e00000ULL,
     .m0 = 0xffff000000f00000ULL,
     .app = L7_APP_RDP,
     .l4 = L7_TCP,
     .need = 6,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0300000000d00000ULL,
     .m0 = 0xffff000000f00000ULL,
     .app = L7_APP_RDP,
     .l4 = L7_TCP,
     .need = 6,
     .rng_at = L7_NORANGE},
    /* PostgreSQL: SSLRequest, GSSENCRequest (length 8), v3.0 StartupMessage
     * (length below 64 KiB, protocol 0x00030000) */
    {.v0 = 0x0000000804d2162fULL,
     .m0 = ~0ULL,
     .app = L7_APP_POSTGRES,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0000000804d21630ULL,
     .m0 = ~0ULL,
     .app = L7_APP_POSTGRES,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0000000000030000ULL,
     .m0 = 0xffff0000ffffffffULL,
     .app = L7_APP_POSTGRES,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    /* MQTT CONNECT: remaining length in one or two bytes, then the protocol
     * name "MQTT" (3.1.1, 5.0) or "MQIsdp" (3.1) */
    {.v0 = 0x100000044d515454ULL,
     .m0 = 0xff80ffffffffffffULL,
     .app = L7_APP_MQTT,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    {.v0 = 0x100000064d514973ULL,
     .m0 = 0xff80ffffffffffffULL,
     .app = L7_APP_MQTT,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    {.v0 = 0x10800000044d5154ULL,
     .m0 = 0xff8080ffffffffffULL,
     .app = L7_APP_MQTT,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = L7_NORANGE},
    /* Memcached binary: magic 0x80/0x81, opcode 0x00-0x26, data type 0,
     * the 24-byte header */
    {.v0 = 0x8000000000000000ULL,
     .m0 = 0xfe00000000ff0000ULL,
     .app = L7_APP_MEMCACHED,
     .l4 = L7_TCP,
     .need = 8,
     .rng_at = 1,
     .rng_lo = 0,
     .rng_hi = 0x26},
    /* WireGuard: message type 1-3, three reserved zero bytes, exact sizes */
    {.v0 = 0x0100000000000000ULL,
     .m0 = 0xffffffff00000000ULL,
     .len_eq = 148,
     .app = L7_APP_WIREGUARD,
     .l4 = L7_UDP,
     .need = 4,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0200000000000000ULL,
     .m0 = 0xffffffff00000000ULL,
     .len_eq = 92,
     .app = L7_APP_WIREGUARD,
     .l4 = L7_UDP,
     .need = 4,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0300000000000000ULL,
     .m0 = 0xffffffff00000000ULL,
     .len_eq = 64,
     .app = L7_APP_WIREGUARD,
     .l4 = L7_UDP,
     .need = 4,
     .rng_at = L7_NORANGE},
    /* QUIC long header (form and fixed bits) of version 1, 2, an IETF draft,
     * or a version negotiation (0: form bit only) */
    {.v0 = 0xc000000001000000ULL,
     .m0 = 0xc0ffffffff000000ULL,
     .app = L7_APP_QUIC,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE},
    {.v0 = 0xc06b3343cf000000ULL,
     .m0 = 0xc0ffffffff000000ULL,
     .app = L7_APP_QUIC,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE},
    {.v0 = 0xc0ff000000000000ULL,
     .m0 = 0xc0ffffff00000000ULL,
     .app = L7_APP_QUIC,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE}, /* the IETF drafts, 0xff0000xx */
    {.v0 = 0x8000000000000000ULL,
     .m0 = 0x80ffffffff000000ULL,
     .app = L7_APP_QUIC,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE},
    /* DTLS record: type 0x14-0x17, version 1.0/1.2/1.3 (0xfeff, 0xfefd,
     * 0xfefc), epoch 0 (a handshake's first records) */
    {.v0 = 0x14fefc0000000000ULL,
     .m0 = 0xfcfffcffff000000ULL,
     .app = L7_APP_DTLS,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE},
    /* DNS over UDP and over TCP (after the length prefix, which must equal
     * the rest of the payload), by header sanity: opcode 0 (query) or 2
     * (status), the Z bit clear, one question, fewer than 256 answer,
     * authority and additional records */
    {.v0 = 0x0000000000010000ULL,
     .m0 = 0x00006840ffffff00ULL,
     .v1 = 0,
     .m1 = 0xff00ff0000000000ULL,
     .app = L7_APP_DNS,
     .l4 = L7_UDP,
     .need = 12,
     .rng_at = L7_NORANGE},
    {.v0 = 0x0000000000000001ULL,
     .m0 = 0x000000006840ffffULL,
     .v1 = 0,
     .m1 = 0xff00ff00ff000000ULL,
     .app = L7_APP_DNS,
     .l4 = L7_TCP,
     .need = 14,
     .rng_at = L7_NORANGE,
     .flags = L7_LENPFX},
    /* SMTP: the server's greeting or a client's EHLO/HELO */
    L7_TEXT(L7_APP_SMTP, L7_TCP, "220 "),
    L7_TEXT(L7_APP_SMTP, L7_TCP, "220-"),
    L7_TEXT(L7_APP_SMTP, L7_TCP, "EHLO "),
    L7_TEXT(L7_APP_SMTP, L7_TCP, "HELO "),
    /* IMAP: the server's untagged greeting */
    L7_TEXT(L7_APP_IMAP, L7_TCP, "* OK "),
    L7_TEXT(L7_APP_IMAP, L7_TCP, "* PREAUT"),
    /* POP3: the server's greeting, a client's first commands */
    L7_TEXT(L7_APP_POP3, L7_TCP, "+OK "),
    L7_TEXT(L7_APP_POP3, L7_TCP, "USER "),
    L7_TEXT(L7_APP_POP3, L7_TCP, "CAPA\r"),
    L7_TEXT(L7_APP_POP3, L7_TCP, "APOP "),
};

#define L7_NSIG (sizeof(l7_sigs) / sizeof(l7_sigs[0]))

/* What a signature is matched against: the first `have` bytes (at most
 * L7_WINDOW; the rest of `b` zero) of a payload `plen` bytes long by its
 * headers, carried by `l4` (L7_TCP or L7_UDP). */
struct l7_buf {
	__u8 b[L7_WINDOW];
	__u32 have;
	__u32 plen;
	__u8 l4;
	__u8 _pad[7];
};

/* Bytes 0-7 (`o` = 0) or 8-15 (`o` = 8) of `b` as a big-endian word. */
static inline __u64 l7_word(const __u8 *b, int o) {
	__u64 w = 0;

	for (int i = 0; i < 8; i++)
		w = (w << 8) | b[o + i];
	return w;
}

/* The enum l7_app label of `in`, or L7_APP_UNKNOWN. */
static inline int l7_classify(const struct l7_buf *in) {
	__u64 w0, w1;

	if (!in)
		return L7_APP_UNKNOWN;
	w0 = l7_word(in->b, 0);
	w1 = l7_word(in->b, 8);
	for (__u32 i = 0; i < L7_NSIG; i++) {
		const struct l7_sig *s = &l7_sigs[i];
		__u8 r;

		if (!(s->l4 & in->l4) || in->have < s->need || (w0 & s->m0) != s->v0 || (w1 & s->m1) != s->v1)
			continue;
		if (s->len_eq && in->plen != s->len_eq)
			continue;
		r = in->b[s->rng_at & (L7_WINDOW - 1)];
		if (s->rng_at < L7_WINDOW && (r < s->rng_lo || r > s->rng_hi))
			continue;
		if ((s->flags & L7_LENPFX) && (w0 >> 48) + 2 != in->plen)
			continue;
		return s->app;
	}
	return L7_APP_UNKNOWN;
}
#endif /* !__cplusplus */

#endif /* PKTSTAT_L7_H */
