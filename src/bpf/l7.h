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
/* Packets without payload a flow is looked at on (a handshake, ACKs, a
 * request's upload ACKed before the response) before it stops: the look
 * finds where the payload starts itself, so a packet without one costs a
 * look, and a flow of ACKs alone stops after these. */
#define L7_EMPTY_BUDGET 64
/* flow_value.app_tries once a label is set: never examined again. */
#define L7_DONE 0xff
#define L7_WINDOW 16

#define L7_TCP 1 /* struct l4_at.l7 (parse.bpf.h), struct l7_sig.l4 */
#define L7_UDP 2
#define L7_LENPFX 1
#define L7_LEN16 2  /* the payload length is a multiple of 16, at least 32 */
#define L7_OPENED 4 /* only in a flow whose opening (SYN) the table saw */
#define L7_NORANGE 0xff

/* (C++ sees the struct too: the programs' skeletons show the table.) */
struct l7_sig {
	__u64 v0, m0, v1, m1;
	__u16 len_eq; /* payload length, 0: any */
	__u8 app;     /* enum l7_app */
	__u8 l4;      /* L7_TCP, L7_UDP */
	__u8 need;    /* bytes captured at least */
	__u8 rng_at, rng_lo, rng_hi;
	__u8 flags; /* L7_LENPFX, L7_LEN16, L7_OPENED */
	__u8 _pad[7];
};

/* The table and the matcher: in user space (the test harness), and in the
 * programs that look at payloads (l7_probe.bpf.h defines L7_SKB or L7_XDP);
 * the others (drops, process) and the C++ engine take only the labels. */
#if !defined(__cplusplus) && (!defined(__bpf__) || defined(L7_SKB) || defined(L7_XDP))

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
/* Case-insensitive (commands of the mail protocols): letters match either case. */
#define L7_IS_ALPHA(c) (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')
#define L7_MI(s, i)                                                                                          \
	((__u64)(sizeof(s) - 1 > (i) ? (L7_IS_ALPHA((s)[(i) < sizeof(s) - 1 ? (i) : 0]) ? 0xdf : 0xff) : 0)  \
	 << (56 - 8 * (i)))
#define L7_STRMI(s)                                                                                          \
	(L7_MI(s, 0) | L7_MI(s, 1) | L7_MI(s, 2) | L7_MI(s, 3) | L7_MI(s, 4) | L7_MI(s, 5) | L7_MI(s, 6) |   \
	 L7_MI(s, 7))
#define L7_TEXTI(a, proto, s)                                                                                \
	{                                                                                                    \
		.v0 = L7_STRV(s), .m0 = L7_STRMI(s), .app = (a), .l4 = (proto), .need = sizeof(s) - 1,       \
		.rng_at = L7_NORANGE                                                                         \
	}
#define L7_TEXT(a, proto, s)                                                                                 \
	{                                                                                                    \
		.v0 = L7_STRV(s), .m0 = L7_STRM(s), .app = (a), .l4 = (proto), .need = sizeof(s) - 1,        \
		.rng_at = L7_NORANGE                                                                         \
	}

/* Byte `j` (0-15) of the window holding the string `s` at offset `o`, and
 * its mask; the words of it (w0: bytes 0-7, w1: bytes 8-15). */
#define L7_IN(s, o, j) ((j) >= (o) && (j) - (o) < (int)sizeof(s) - 1)
#define L7_SB(s, o, j) ((__u64)(L7_IN(s, o, j) ? (__u8)(s)[L7_IN(s, o, j) ? (j) - (o) : 0] : 0))
#define L7_SM(s, o, j)                                                                                       \
	((__u64)(L7_IN(s, o, j) ? (L7_IS_ALPHA((s)[L7_IN(s, o, j) ? (j) - (o) : 0]) ? 0xdf : 0xff) : 0))
#define L7_WORD(f, s, o, b)                                                                                  \
	(f(s, o, (b)) << 56 | f(s, o, (b) + 1) << 48 | f(s, o, (b) + 2) << 40 | f(s, o, (b) + 3) << 32 |     \
	 f(s, o, (b) + 4) << 24 | f(s, o, (b) + 5) << 16 | f(s, o, (b) + 6) << 8 | f(s, o, (b) + 7))
/* The text `s` after a tag of `o` bytes (any bytes), cut at the window,
 * letters in either case. */
#define L7_TAGGED(a, o, s)                                                                                   \
	{                                                                                                    \
		.v0 = L7_WORD(L7_SB, s, o, 0), .m0 = L7_WORD(L7_SM, s, o, 0), .v1 = L7_WORD(L7_SB, s, o, 8), \
		.m1 = L7_WORD(L7_SM, s, o, 8), .app = (a), .l4 = L7_TCP,                                     \
		.need = (o) + sizeof(s) - 1 < L7_WINDOW ? (o) + sizeof(s) - 1 : L7_WINDOW,                   \
		.rng_at = L7_NORANGE                                                                         \
	}
/* A TCP payload of exactly the byte `c`, in a flow whose opening was seen. */
#define L7_ONEBYTE(a, c)                                                                                     \
	{                                                                                                    \
		.v0 = (__u64)(c) << 56, .m0 = 0xffULL << 56, .len_eq = 1, .app = (a), .l4 = L7_TCP,          \
		.need = 1, .rng_at = L7_NORANGE, .flags = L7_OPENED                                          \
	}
/* A QUIC long header of a version `ver` under `mask`. */
#define L7_QUIC(ver, mask)                                                                                   \
	{                                                                                                    \
		.v0 = 0x8000000000000000ULL | (__u64)(ver) << 24,                                            \
		.m0 = 0x8000000000000000ULL | (__u64)(mask) << 24, .app = L7_APP_QUIC, .l4 = L7_UDP,         \
		.need = 5, .rng_at = L7_NORANGE                                                              \
	}

/* In the eBPF programs the table is a global the program could write (.data,
 * not .rodata): the verifier then reads its fields as unknown numbers, so
 * every signature's paths end in the same state and it checks the loop in
 * one pass per signature; read-only, it knows each field's value and follows
 * each partial match apart (E2BIG). Nothing writes it. */
#ifdef __bpf__
#define L7_TABLE
#else
#define L7_TABLE static const
#endif
L7_TABLE struct l7_sig l7_sigs[] = {
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
    /* PostgreSQL: the server's authentication request ('R', a length of
     * 8-255, the 32-bit method) */
    {.v0 = 0x5200000000000000ULL,
     .m0 = 0xffffffff00ffffffULL,
     .app = L7_APP_POSTGRES,
     .l4 = L7_TCP,
     .need = 9,
     .rng_at = 4,
     .rng_lo = 8,
     .rng_hi = 0xff},
    /* PostgreSQL: the server's one-byte answer to an SSLRequest or a
     * GSSENCRequest ('S', 'N', 'G'), only as a payload near a connection's
     * opening (its SYN in the same interval): one byte alone says little */
    L7_ONEBYTE(L7_APP_POSTGRES, 'S'),
    L7_ONEBYTE(L7_APP_POSTGRES, 'N'),
    L7_ONEBYTE(L7_APP_POSTGRES, 'G'),
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
    /* An SSLv2-framed ClientHello (2-byte record header with the high bit,
     * message type 1, version 3.x): TLS clients that still offer it; before
     * Memcached, whose key length can never be 0x0103 (keys are 250 bytes
     * at most) */
    {.v0 = 0x8000010300000000ULL,
     .m0 = 0x8000ffff00000000ULL,
     .app = L7_APP_TLS,
     .l4 = L7_TCP,
     .need = 5,
     .rng_at = 4,
     .rng_lo = 0,
     .rng_hi = 4},
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
    /* WireGuard transport data (type 4), for a flow seen from its middle:
     * a 16-byte header, then the padded plaintext and a 16-byte tag, so a
     * multiple of 16 of at least 32 bytes */
    {.v0 = 0x0400000000000000ULL,
     .m0 = 0xffffffff00000000ULL,
     .app = L7_APP_WIREGUARD,
     .l4 = L7_UDP,
     .need = 16,
     .rng_at = L7_NORANGE,
     .flags = L7_LEN16},
    /* QUIC long header (the form bit; not the fixed bit, which RFC 9287
     * lets an endpoint grease) of version 1, 2, an IETF draft (0xff0000xx),
     * a reserved greasing version (0x?a?a?a?a, RFC 9000 15), Google's
     * Q0xx/T0xx or Facebook mvfst's 0xfaceb00x */
    L7_QUIC(0x00000001, 0xffffffff),
    L7_QUIC(0x6b3343cf, 0xffffffff),
    L7_QUIC(0xff000000, 0xffffff00),
    L7_QUIC(0x0a0a0a0a, 0x0f0f0f0f),
    L7_QUIC(0x51303030, 0xfffff0f0),
    L7_QUIC(0x54303030, 0xfffff0f0),
    L7_QUIC(0xfaceb000, 0xfffffff0),
    /* DTLS record: type 0x14-0x17, version 1.0/1.2/1.3 (0xfeff, 0xfefd,
     * 0xfefc) or OpenSSL's pre-standard 0x0100 (Cisco AnyConnect), any
     * epoch (a flow seen from its middle) */
    {.v0 = 0x14fefc0000000000ULL,
     .m0 = 0xfcfffc0000000000ULL,
     .app = L7_APP_DTLS,
     .l4 = L7_UDP,
     .need = 13,
     .rng_at = L7_NORANGE},
    {.v0 = 0x1401000000000000ULL,
     .m0 = 0xfcffff0000000000ULL,
     .app = L7_APP_DTLS,
     .l4 = L7_UDP,
     .need = 13,
     .rng_at = L7_NORANGE},
    /* DNS over UDP and over TCP (after the length prefix, which must equal
     * the rest of the payload), by header sanity: opcode 0 (query) or 2
     * (status), the Z bit clear, 1-255 questions, fewer than 256 answer,
     * authority and additional records; or (mDNS, LLMNR) a response without
     * questions but with 1-255 answers */
    {.v0 = 0x0000000000000000ULL,
     .m0 = 0x00006840ff00ff00ULL,
     .v1 = 0,
     .m1 = 0xff00ff0000000000ULL,
     .app = L7_APP_DNS,
     .l4 = L7_UDP,
     .need = 12,
     .rng_at = 5,
     .rng_lo = 1,
     .rng_hi = 0xff},
    {.v0 = 0x0000800000000000ULL,
     .m0 = 0x0000f840ffffff00ULL,
     .v1 = 0,
     .m1 = 0xff00ff0000000000ULL,
     .app = L7_APP_DNS,
     .l4 = L7_UDP,
     .need = 12,
     .rng_at = 7,
     .rng_lo = 1,
     .rng_hi = 0xff},
    {.v0 = 0x0000000000000000ULL,
     .m0 = 0x000000006840ff00ULL,
     .v1 = 0,
     .m1 = 0xff00ff00ff000000ULL,
     .app = L7_APP_DNS,
     .l4 = L7_TCP,
     .need = 14,
     .rng_at = 7,
     .rng_lo = 1,
     .rng_hi = 0xff,
     .flags = L7_LENPFX},
    /* a QUIC version negotiation (version 0: form bit only), after DNS,
     * whose query ids and zero flags can look like one */
    {.v0 = 0x8000000000000000ULL,
     .m0 = 0x80ffffffff000000ULL,
     .app = L7_APP_QUIC,
     .l4 = L7_UDP,
     .need = 5,
     .rng_at = L7_NORANGE},
    /* SMTP: the server's greeting or a client's EHLO/HELO */
    L7_TEXT(L7_APP_SMTP, L7_TCP, "220 "),
    L7_TEXT(L7_APP_SMTP, L7_TCP, "220-"),
    L7_TEXTI(L7_APP_SMTP, L7_TCP, "EHLO "),
    L7_TEXTI(L7_APP_SMTP, L7_TCP, "HELO "),
    /* IMAP: the server's untagged greeting */
    L7_TEXT(L7_APP_IMAP, L7_TCP, "* OK "),
    L7_TEXT(L7_APP_IMAP, L7_TCP, "* PREAUT"),
    /* IMAP: a client's first tagged command, tags of 1-4 bytes */
    L7_TAGGED(L7_APP_IMAP, 1, " CAPABILITY"),
    L7_TAGGED(L7_APP_IMAP, 2, " CAPABILITY"),
    L7_TAGGED(L7_APP_IMAP, 3, " CAPABILITY"),
    L7_TAGGED(L7_APP_IMAP, 4, " CAPABILITY"),
    L7_TAGGED(L7_APP_IMAP, 1, " STARTTLS\r"),
    L7_TAGGED(L7_APP_IMAP, 2, " STARTTLS\r"),
    L7_TAGGED(L7_APP_IMAP, 3, " STARTTLS\r"),
    L7_TAGGED(L7_APP_IMAP, 4, " STARTTLS\r"),
    L7_TAGGED(L7_APP_IMAP, 1, " LOGIN "),
    L7_TAGGED(L7_APP_IMAP, 2, " LOGIN "),
    L7_TAGGED(L7_APP_IMAP, 3, " LOGIN "),
    L7_TAGGED(L7_APP_IMAP, 4, " LOGIN "),
    L7_TAGGED(L7_APP_IMAP, 1, " AUTHENTICATE "),
    L7_TAGGED(L7_APP_IMAP, 2, " AUTHENTICATE "),
    /* POP3: the server's greeting, a client's first commands */
    L7_TEXT(L7_APP_POP3, L7_TCP, "+OK "),
    L7_TEXTI(L7_APP_POP3, L7_TCP, "USER "),
    L7_TEXTI(L7_APP_POP3, L7_TCP, "CAPA\r"),
    L7_TEXTI(L7_APP_POP3, L7_TCP, "APOP "),
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
	__u8 opened; /* a TCP flow whose SYN the same table saw (L7_OPENED) */
	__u8 _pad[6];
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
	/* a loop, not unrolled: with the table's constants folded in, the
	 * verifier would follow every partial match of every signature (E2BIG);
	 * as a loop each pass is one signature read from the table */
#ifdef __clang__
#pragma clang loop unroll(disable)
#endif
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
		if ((s->flags & L7_LEN16) && ((in->plen & 15) || in->plen < 32))
			continue;
		if ((s->flags & L7_OPENED) && !in->opened)
			continue;
		return s->app;
	}
	return L7_APP_UNKNOWN;
}
#endif /* the table and the matcher */

#endif /* PKTSTAT_L7_H */
