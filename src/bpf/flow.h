/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow.h - the flow key and value shared verbatim by the eBPF programs and the
 * C++ engine. Fixed-width types only; every padding byte is named so that a
 * zeroed key hashes the same in the kernel and in user space.
 *
 * Addresses are 16 bytes: IPv6 as is, IPv4 in IPv4-mapped form
 * (::ffff:a.b.c.d). `ipver` says which family the packet really was, so an
 * IPv6 packet carrying a v4-mapped address is never merged with IPv4.
 * Ports are in host byte order. Protocols without ports keep their own fields
 * in the port slots (host byte order, as pktstat-bpf does), so the key never
 * grows for them:
 *   ICMP/ICMPv6 (1, 58)  sport = type,            dport = code
 *   ESP (50), AH (51)    sport = SPI >> 16,       dport = SPI & 0xffff
 *   GRE (47)             sport = protocol type (the inner EtherType),
 *                        dport = flags and version (the first 16 bits)
 *   OSPF (89)            sport = message type,    dport = version
 *
 * ARP (Ethernet/IPv4 ARP, counted unless --no-arp) is a flow of its own:
 * ipver = FLOW_IPVER_ARP (0: not an IP packet, so an ARP flow never merges
 * with an IP flow whatever its protocol number), proto = FLOW_PROTO_ARP
 * (254, pktstat-bpf's synthetic ARP number; it means ARP only with ipver 0),
 * saddr/daddr = the sender and target protocol addresses (v4-mapped, as
 * IPv4), sport = the opcode (1 request, 2 reply ...), dport = 0.
 */
#ifndef PKTSTAT_FLOW_H
#define PKTSTAT_FLOW_H

#include <linux/types.h>

#ifdef __cplusplus
#define FLOW_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define FLOW_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

enum flow_dir {
	FLOW_DIR_INGRESS = 0,
	FLOW_DIR_EGRESS = 1,
	FLOW_DIR_NONE = 2, /* replay of a capture file: direction unknown */
	FLOW_DIR_NR = 3,
};

/* What a flow's counts are: data (every mode), or, in process mode, TCP
 * segments the kernel sent again (its own category, so a flow's data bytes
 * stay what the process sent). */
enum flow_kind {
	FLOW_KIND_DATA = 0,
	FLOW_KIND_RETRANSMIT = 1,
};

#define FLOW_IPVER_ARP 0
#define FLOW_PROTO_ARP 254

/* What a packet says about itself: the key of the TC, XDP and replay maps. */
struct flow_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto; /* IP protocol of the upper layer (after IPv6 extension headers) */
	__u8 dir;   /* enum flow_dir */
	__u8 ipver; /* 4 or 6; FLOW_IPVER_ARP for ARP */
	__u8 kind;  /* enum flow_kind */
	__u32 ifindex;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_tuple) == 44, "flow_tuple layout");

/* A flow as every mode reports it: the tuple plus who owns it (process and
 * cgroup modes fill the owner slots; packet modes leave them zero). */
struct flow_key {
	struct flow_tuple tuple;
	__u32 pid; /* TGID, 0 = unknown */
	__u64 cgroup_id;
	char comm[16];
};
FLOW_STATIC_ASSERT(sizeof(struct flow_key) == 72, "flow_key layout");

/* TCP header flag bits (byte 13 of the header), as tcp_flags holds them. */
enum tcp_flag_bits {
	TCP_FLAG_FIN = 0x01,
	TCP_FLAG_SYN = 0x02,
	TCP_FLAG_RST = 0x04,
	TCP_FLAG_PSH = 0x08,
	TCP_FLAG_ACK = 0x10,
	TCP_FLAG_URG = 0x20,
	TCP_FLAG_ECE = 0x40,
	TCP_FLAG_CWR = 0x80,
};

/* A TCP flow's health (tcp_health.bpf.h; TC, XDP and replay): zero for
 * other protocols and modes. */
struct flow_health {
	__u32 retrans_packets; /* segments carrying sequence numbers the flow had
	                        * already carried (retransmissions) */
	__u32 rtt_samples;     /* round trips timed: a TSval of this flow echoed
	                        * back as TSecr by the reverse flow */
	__u64 retrans_bytes;   /* their bytes, counted as `bytes` counts */
	__u64 rtt_sum_ns;      /* the samples' sum */
	__u64 rtt_min_ns;      /* the smallest (0: no sample) */
	__u64 rtt_max_ns;      /* the largest */
};
FLOW_STATIC_ASSERT(sizeof(struct flow_health) == 40, "flow_health layout");

/* A flow's counts. The TCP fields are zero for other protocols, for TCP
 * packets whose header was not captured whole (parse.bpf.h: no ports, no
 * flags) and in process mode (socket events carry no TCP header). Merging
 * (CPUs, intervals, a flow's lifetime): counts add, tcp_flags ORs, the
 * RTT minimum and maximum take the smaller and larger, app takes the highest
 * value (a label from any CPU or interval beats
 * "unknown", which beats "not looked at yet"). The
 * 32-bit counts saturate at 2^32-1 where user space adds them. */
struct flow_value {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u32 syn_packets; /* packets with SYN set (SYN and SYN-ACK) */
	__u32 fin_packets; /* packets with FIN set */
	__u32 rst_packets; /* packets with RST set */
	__u8 tcp_flags;    /* OR of the flag bytes seen (enum tcp_flag_bits) */
	__u8 app;          /* application label (l7.h enum l7_app): 0 not looked at yet,
	                    * 1 looked at, not recognised, then the protocols (the
	                    * packet programs do not fill it yet: issue 17) */
	__u8 app_tries;    /* payload packets looked at (L7_DONE once labelled;
	                    * L7_BUDGET: no more looks) */
	__u8 app_empty;    /* packets without payload looked at (l7_probe.bpf.h) */
	struct flow_health health;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_value) == 88, "flow_value layout");

/* One row of a snapshot as it reaches NumPy (built by the C++ engine). */
struct flow_record {
	struct flow_key key;
	struct flow_value value;
};
FLOW_STATIC_ASSERT(sizeof(struct flow_record) == 160, "flow_record layout");

/* ---- names (l7_names.bpf.h) ---------------------------------------------
 * What a flow's first payload packets name: a TLS or DTLS ClientHello's
 * server name (SNI) and offered ALPN protocols, an HTTP/1.x request's Host,
 * a DNS message's query name and type (and a response's code and answer
 * count), a QUIC long header's version. Kept in a map of their own keyed as
 * the flows are (the packet programs' flow_tuple, or flow_key where flows
 * carry owners), never in the flow key or value; the engine moves the map's
 * entries out at each drain. */
enum flow_name_kind {
	FLOW_NAME_NONE = 0,
	FLOW_NAME_SNI = 1,       /* name: the ClientHello's host_name, as sent */
	FLOW_NAME_HTTP_HOST = 2, /* name: the Host header's value, as sent */
	FLOW_NAME_DNS = 3,       /* name: the query name in DNS wire form (labels) */
};
#define FLOW_NAME_MAX 255 /* bytes of a name */
#define FLOW_ALPN_MAX 64  /* bytes of the ALPN list kept (wire form) */
#define FLOW_NAME_NO_RCODE 0xff

struct flow_name {
	__u8 kind;         /* enum flow_name_kind (NONE: only a QUIC version) */
	__u8 len;          /* bytes of name */
	__u8 alpn_len;     /* bytes of alpn */
	__u8 dns_rcode;    /* the last response's code, FLOW_NAME_NO_RCODE: none */
	__u16 dns_qtype;   /* the last query type */
	__u16 dns_answers; /* the last response's answer count */
	__u32 dns_queries; /* DNS queries (QR 0) seen on the flow since the drain */
	__u32 _pad0;
	__u32 dns_responses; /* DNS responses (QR 1) seen since the drain */
	__u32 quic_version;  /* a QUIC long header's version (0: none seen) */
	__u32 tls_skip;      /* a ClientHello continued in the next segment: the
	                      * offset of its next extension there */
	__u32 tls_left;      /* and the extension bytes left from there */
	__u32 tls_seq;       /* the TCP sequence number that segment must carry */
	__u8 tls_more;       /* 1: the ClientHello continues (tls_* above) */
	__u8 quic;           /* 1: a QUIC long header was seen (quic_version holds its
	                      * version; 0 is a version negotiation) */
	__u8 _pad[2];
	char alpn[FLOW_ALPN_MAX]; /* the protocol_name_list, length-prefixed names */
	char name[FLOW_NAME_MAX + 1];
};
FLOW_STATIC_ASSERT(sizeof(struct flow_name) == 360, "flow_name layout");

/* A name as it reaches NumPy (built by the C++ engine). */
struct name_record {
	struct flow_key key;
	struct flow_name name;
};
FLOW_STATIC_ASSERT(sizeof(struct name_record) == 432, "name_record layout");

/* The names map's counters (a per-CPU array of one), and the dns_addrs
 * map's. */
struct name_stats {
	__u64 written;        /* names stored */
	__u64 full;           /* names not stored: the map had no room */
	__u64 dns_addrs;      /* DNS answer addresses stored (dns_addrs) */
	__u64 dns_addrs_full; /* not stored: the map had no room */
};

/* A DNS response's A and AAAA answers (l7_names.bpf.h, the `dns_addrs`
 * map): the address, as flow.h keeps addresses (16 bytes, IPv4
 * v4-mapped), and its family (4 or 6: A or AAAA) ... */
struct dns_addr_key {
	__u8 addr[16];
	__u8 ipver;
	__u8 _pad[3];
};
FLOW_STATIC_ASSERT(sizeof(struct dns_addr_key) == 20, "dns_addr_key layout");

/* ... -> the QUESTION's name (wire form, as struct flow_name keeps a DNS
 * name: a CNAME chain's addresses belong to the name asked for), the
 * record's TTL and when the response was seen (the flows' clock). */
struct dns_addr {
	__u64 seen_ns;
	__u32 ttl; /* seconds */
	__u8 len;  /* bytes of name */
	__u8 _pad[3];
	char name[FLOW_NAME_MAX + 1];
};
FLOW_STATIC_ASSERT(sizeof(struct dns_addr) == 272, "dns_addr layout");

/* A flow named by a DNS answer, as it reaches NumPy (built by the C++
 * engine: the answer whose address is the flow's remote address, seen
 * before the flow's first packet and still within its TTL then). */
struct dns_name_record {
	struct flow_key key;
	struct dns_addr answer;
};
FLOW_STATIC_ASSERT(sizeof(struct dns_name_record) == 344, "dns_name_record layout");

/* Conservation counters, one set per direction: every packet a program sees
 * is counted in `packets`/`bytes` and then exactly once more, in a flow, in
 * `unparsed` (not an IP packet we can key) or in `overflow` (map full). */
struct dir_stats {
	__u64 packets;
	__u64 bytes;
	__u64 unparsed_packets;
	__u64 unparsed_bytes;
	__u64 overflow_packets;
	__u64 overflow_bytes;
};
FLOW_STATIC_ASSERT(sizeof(struct dir_stats) == 48, "dir_stats layout");

/* Replay passes the frame's timestamp and original length to the program in
 * __sk_buff->cb[] (BPF_PROG_TEST_RUN accepts cb in ctx_in). */
enum replay_cb {
	REPLAY_CB_TS_LO = 0,
	REPLAY_CB_TS_HI = 1,
	REPLAY_CB_WIRE_LEN = 2,
};

/* ---- cgroup mode: socket owners ------------------------------------------
 * The owner map is keyed by socket cookie (u64, unique for the boot). The
 * cgroup sock_create hook, the sock_ops passive-open callback, the send and
 * receive tracepoints and the start-time scan (sock_diag joined with
 * /proc/<pid>/fd) fill it; the cgroup_skb programs read it. */
enum sock_owner_flags {
	OWNER_SHARED = 1 << 0,    /* held by several processes: pid 0 */
	OWNER_RELEASED = 1 << 1,  /* closed by its process; kept for its last packets */
	OWNER_UNCLAIMED = 1 << 2, /* in our cgroup, owner not known yet: pid 0 */
	OWNER_INHERITED = 1 << 3, /* accepted connection, from its listener's owner */
	OWNER_SCANNED = 1 << 4,   /* from the start-time scan */
	OWNER_CREATED = 1 << 5,   /* from the sock_create hook */
	OWNER_CLAIMED = 1 << 6,   /* from a process seen using it alone */
};

struct sock_owner {
	__u32 pid;   /* TGID; 0 = unknown or shared */
	__u32 flags; /* enum sock_owner_flags */
	char comm[16];
	__u32 gen; /* the owner's fork generation when this was recorded: if
	            * the process has forked since, its child may hold the
	            * socket too, so the owner is uncertain until the process
	            * is next seen using the socket alone */
	__u32 _pad;
};
FLOW_STATIC_ASSERT(sizeof(struct sock_owner) == 32, "sock_owner layout");

/* A TCP listener, for attributing the connections it accepts. */
struct listener_key {
	__u64 netns_cookie;
	__u16 port; /* host byte order */
	__u8 _pad[6];
};
FLOW_STATIC_ASSERT(sizeof(struct listener_key) == 16, "listener_key layout");

/* A cgroup v2 directory made after the start (ring buffer record). */
#define CGROUP_EVENT_PATH_MAX 1024
struct cgroup_event {
	__u64 id;  /* cgroup id (kernfs node id, as bpf_skb_cgroup_id returns) */
	__u32 len; /* bytes of path including the NUL */
	__u32 _pad;
	char path[CGROUP_EVENT_PATH_MAX]; /* from the hierarchy root: "/a/b" */
};

enum owner_stat {
	OWNER_STAT_CREATED = 0, /* sock_create recorded an owner */
	OWNER_STAT_RELEASED,    /* sock_release marked one */
	OWNER_STAT_INHERITED,   /* accepted connection took its listener's owner */
	OWNER_STAT_UNCLAIMED,   /* accepted connection of an unknown or shared listener */
	OWNER_STAT_CLAIMED,     /* a process seen using a socket alone became its owner */
	OWNER_STAT_SHARED,      /* a second process was seen using a socket */
	OWNER_STAT_MAP_FULL,    /* an owner could not be stored */
	OWNER_STAT_EVENTS_LOST, /* cgroup_mkdir records the ring buffer had no room for */
	OWNER_STAT_EVICTED,     /* a socket released without its entry: the LRU map pushed
	                         * out the owner of a live socket */
	OWNER_STAT_REAP_LOST,   /* a released socket the queue had no room for (its entry
	                         * stays until the LRU map pushes it out) */
	OWNER_STAT_NR,
};

/* ---- process mode --------------------------------------------------------
 * Socket-level accounting: one event per send/receive call that moved data
 * (per datagram for UDP and ICMP), bytes = what the call returned; one per
 * retransmitted TCP segment. The owner of a socket, for events that run
 * outside its process (retransmissions from timers and softirq), is the
 * process last seen sending on it (process_owners map, by struct sock). */
struct proc_owner {
	__u32 pid; /* TGID */
	__u32 _pad;
	__u64 cgroup_id;
	char comm[16];
};
FLOW_STATIC_ASSERT(sizeof(struct proc_owner) == 32, "proc_owner layout");

enum proc_stat {
	PROC_STAT_UNOWNED_PACKETS = 0, /* events counted with pid 0: owner not known */
	PROC_STAT_UNOWNED_BYTES,
	PROC_STAT_NO_PEER_PACKETS, /* datagrams of unconnected sockets whose peer was not found */
	PROC_STAT_NO_PEER_BYTES,
	PROC_STAT_OWNERS_RELEASED, /* a TCP socket's close removed its process_owners entry */
	PROC_STAT_OWNERS_EVICTED,  /* a TCP socket that sent data closed without its entry:
	                            * the LRU map pushed out the owner of a live socket */
	PROC_STAT_NR,
};

#endif /* PKTSTAT_FLOW_H */
