"""Replay cross-checked against an independent implementation: Wireshark's
dissectors (tshark), over every capture of the shared corpus (tcpdump's test
captures: many were written by fuzzers to break dissectors).

For every file: replay finishes and conserves. For every file (Ethernet,
Linux cooked, raw IP and BSD loopback alike):

- total frames and bytes (frame.len) equal tshark's;
- per (source IP, destination IP) of the outermost IP header, packets and
  bytes equal tshark's;
- per 5-tuple, packets and bytes of unfragmented TCP and UDP equal tshark's;
- our unparsed frames are exactly the frames tshark finds no IP address in,
  plus the frames of the listed exceptions, less the Ethernet/IPv4 ARP frames
  (since issue 17 those are ARP flows, not unparsed: per sender and target
  protocol address and opcode, packets and bytes equal tshark's).

Where tshark and we legitimately differ, EXCEPTIONS lists it per file with
the reason. An exception either names the layer through which tshark reaches the IP
header and we do not (frames tshark dissects as <layer> before their first
IP header are then expected in our unparsed count, and nowhere else), or is
one of: ``l4-malformed`` (tshark gives no ports for a TCP/UDP header it
finds malformed: that address pair's TCP/UDP is compared by pair totals
only) and ``l4-short`` (tshark shows ports from a TCP/UDP header cut short
by the capture: we must key those frames with ports 0).
An exception that no longer matches anything fails the test, so the list
cannot go stale.

tshark runs once per file per session, in parallel, and its output is also
kept in pytest's cache keyed by the file's SHA-256 and tshark's version.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

PCAPS = Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))
CORPUS = PCAPS / "corpus"
FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []

FIELDS = [
    "frame.number",
    "frame.len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.hdr_len",
    "udp.srcport",
    "udp.dstport",
    "udp.checksum",
    "arp.hw.type",
    "arp.proto.type",
    "arp.hw.size",
    "arp.proto.size",
    "arp.opcode",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
]

# Layers our parser walks on the way to the outermost IP header (tshark's
# names): link layers, ethertype dispatch, up to two VLAN tags.
WALKED = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "raw", "null", "loop"}
# IPv6 extension headers (tshark's layer names) between the IP header and L4.
IPV6_EXT = {"ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts", "ipv6.shim6", "ah"}

EXCEPTIONS: dict[str, dict[str, str]] = {
    "arista_ether.pcap": {
        "avsp": "Arista vendor-specific ethertype 0xd28b (timestamp header) in front of the IP header: "
        "not parsed, so those frames are unparsed",
    },
    "macsec-integonly.pcap": {
        "macsec": "MACsec (802.1AE, ethertype 0x88e5) frames: the parser does not look inside MACsec, "
        "even where integrity-only MACsec leaves the payload readable",
    },
    "macsec-short-longer.pcap": {"macsec": "MACsec (802.1AE) frame: not parsed (see macsec-integonly.pcap)"},
    "macsec-short-valid.pcap": {"macsec": "MACsec (802.1AE) frame: not parsed (see macsec-integonly.pcap)"},
    "nsh.pcap": {"nsh": "Network Service Header (ethertype 0x894f) in front of the IP header: not parsed"},
    "tok2str-oobr-2.pcap": {
        "mpls": "MPLS label stack (ethertype 0x8847) in front of the IP header: not parsed"
    },
    "bigtcp-ipv6-geneve-ipv4.pcap": {
        "l4-malformed": "IPv6 BIG TCP super-packet: payload length 0 and UDP length 0; tshark calls the UDP "
        "header malformed and gives no ports, we read them (payload length 0 = to the end of the frame)",
    },
    "bigtcp-ipv6-vxlan-ipv4.pcap": {"l4-malformed": "as bigtcp-ipv6-geneve-ipv4.pcap"},
    "tcp_header_heapoverflow.pcap": {
        "l4-short": "only 12 bytes of the TCP header were captured: tshark shows the ports it has, our "
        "rule keys a flow with ports 0 unless the whole minimal L4 header is there",
    },
}


def _tshark() -> str | None:
    return shutil.which("tshark")


def _version(tshark: str) -> str:
    return subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _dissect(tshark: str, path: Path) -> str:
    cmd = [tshark, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"]
    for f in FIELDS:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"tshark failed on {path.name}: {p.stderr.strip()}")
    return p.stdout


@pytest.fixture(scope="session")
def tshark_output(request) -> dict[str, str]:
    """{file name: tshark's field dump}, for the whole corpus."""
    if not FILES:
        pytest.skip(f"the capture corpus is missing ({CORPUS}); set PKTSTAT_BPF_PCAPS")
    tshark = _tshark()
    if not tshark:
        pytest.skip("tshark is not installed (make setup installs it)")
    version = _version(tshark)
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    out: dict[str, str] = {}
    todo = []
    for name in FILES:
        path = CORPUS / name
        key = hashlib.sha256(path.read_bytes() + version.encode() + "\0".join(FIELDS).encode()).hexdigest()
        hit = cache.get(f"pktstat_bpf/tshark/{key}", None) if cache is not None else None
        if hit is not None:
            out[name] = hit
        else:
            todo.append((name, key))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        futures = {ex.submit(_dissect, tshark, CORPUS / name): (name, key) for name, key in todo}
        for fut in concurrent.futures.as_completed(futures):
            name, key = futures[fut]
            out[name] = fut.result()
            if cache is not None:
                cache.set(f"pktstat_bpf/tshark/{key}", out[name])
    return out


@pytest.fixture(scope="session")
def replayer(bpf):
    import pktstat_bpf

    return pktstat_bpf.Replayer(max_entries=1 << 16)


def _addr(s: str) -> str:
    return str(ipaddress.ip_address(s))


class TsharkView:
    """tshark's frames, classified as our parser rules would see them."""

    def __init__(self, text: str, exceptions: dict[str, str]) -> None:
        self.frames = 0
        self.bytes = 0
        self.pairs: Counter = Counter()  # (src, dst) -> packets; (src, dst, "bytes") -> bytes
        self.five: Counter = Counter()  # (src, dst, proto, sport, dport) [+ "bytes"]
        self.unkeyed = [0, 0]  # frames without an outer IP address: packets, bytes
        self.excepted: Counter = Counter()  # layer -> frames excluded by an exception
        self.fragmented: set = set()  # (src, dst, proto) of TCP/UDP fragments
        self.arp: Counter = Counter()  # (sender, target, opcode) [+ "bytes"] of Ethernet/IPv4 ARP
        for line in text.splitlines():
            c = dict(zip(FIELDS, line.split("\t")))
            flen = int(c["frame.len"])
            self.frames += 1
            self.bytes += flen
            layers = c["frame.protocols"].split(":")
            ip_at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
            if ip_at is None and arp_key(c, layers) is not None:
                self.arp[arp_key(c, layers)] += 1
                self.arp[(*arp_key(c, layers), "bytes")] += flen
                continue
            if ip_at is None:
                self.unkeyed[0] += 1
                self.unkeyed[1] += flen
                continue
            foreign = [layer for layer in layers[:ip_at] if layer not in WALKED]
            if foreign:
                if foreign[0] in exceptions:
                    self.excepted[foreign[0]] += 1
                    self.unkeyed[0] += 1
                    self.unkeyed[1] += flen
                    continue
                raise AssertionError(
                    f"frame {c['frame.number']}: tshark reaches IP through {foreign[0]} ({c['frame.protocols']}) "
                    "and no exception explains it"
                )
            v4 = layers[ip_at] == "ip"
            src, dst = (c["ip.src"], c["ip.dst"]) if v4 else (c["ipv6.src"], c["ipv6.dst"])
            if not src or not dst:  # tshark found the header bogus before the addresses
                self.unkeyed[0] += 1
                self.unkeyed[1] += flen
                continue
            src, dst = _addr(src), _addr(dst)
            self.pairs[(src, dst)] += 1
            self.pairs[(src, dst, "bytes")] += flen
            after = [layer for layer in layers[ip_at + 1 :] if layer not in IPV6_EXT]
            upper = after[0] if after else ""
            if upper not in ("tcp", "udp"):
                continue
            if v4:
                frag = c["ip.flags.mf"] in ("1", "True") or c["ip.frag_offset"] not in ("", "0")
            else:
                frag = c["ipv6.fraghdr.offset"] not in ("", "0") or c["ipv6.fraghdr.more"] in ("1", "True")
            proto = "TCP" if upper == "tcp" else "UDP"
            if frag:
                self.fragmented.add((src, dst, proto))
                continue
            sport, dport = c[f"{upper}.srcport"], c[f"{upper}.dstport"]
            if not sport and "l4-malformed" in exceptions:
                self.excepted["l4-malformed"] += 1
                self.fragmented.add((src, dst, proto))
                continue
            complete = c["tcp.hdr_len"] if upper == "tcp" else c["udp.checksum"]
            if sport and not complete and "l4-short" in exceptions:
                self.excepted["l4-short"] += 1
                sport = dport = "0"  # our rule: no ports from an incomplete header
            k = (src, dst, proto, int(sport or 0), int(dport or 0))
            self.five[k] += 1
            self.five[(*k, "bytes")] += flen


def arp_key(c: dict, layers: list) -> tuple | None:
    """(sender, target, opcode) of a frame our parser keys as ARP: tshark
    reaches ARP through walked layers only, and it is Ethernet/IPv4 ARP with
    all 28 bytes (the target protocol address, its last field, was captured)."""
    if "arp" not in layers or any(layer not in WALKED for layer in layers[: layers.index("arp")]):
        return None
    sizes = (c["arp.hw.type"], c["arp.proto.type"], c["arp.hw.size"], c["arp.proto.size"])
    if not all(sizes) or tuple(int(v, 0) for v in sizes) != (1, 0x0800, 6, 4) or not c["arp.dst.proto_ipv4"]:
        return None
    return (c["arp.src.proto_ipv4"], c["arp.dst.proto_ipv4"], int(c["arp.opcode"], 0))


def _ours(snap):
    pairs: Counter = Counter()
    five: Counter = Counter()
    arp: Counter = Counter()
    for f in snap.flows():
        if f["proto"] == "ARP":
            arp[(f["srcIp"], f["dstIp"], f["srcPort"])] += f["packets"]
            arp[(f["srcIp"], f["dstIp"], f["srcPort"], "bytes")] += f["bytes"]
            continue
        pairs[(f["srcIp"], f["dstIp"])] += f["packets"]
        pairs[(f["srcIp"], f["dstIp"], "bytes")] += f["bytes"]
        if f["proto"] in ("TCP", "UDP"):
            k = (f["srcIp"], f["dstIp"], f["proto"], f["srcPort"], f["dstPort"])
            five[k] += f["packets"]
            five[(*k, "bytes")] += f["bytes"]
    return pairs, five, arp


def _diff(a: Counter, b: Counter) -> dict:
    return {
        k: (a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b), key=str) if a.get(k, 0) != b.get(k, 0)
    }


@pytest.mark.parametrize("name", FILES)
def test_corpus_file_matches_tshark(name, replayer, tshark_output):
    exceptions = EXCEPTIONS.get(name, {})
    theirs = TsharkView(tshark_output[name], exceptions)
    snap = replayer.replay(CORPUS / name)
    t, a = snap.totals, snap.totals.all
    assert t.conserved
    assert "damage" not in snap.extra, snap.extra
    assert (a.packets, a.bytes) == (theirs.frames, theirs.bytes)
    assert a.overflow_packets == 0
    ours_pairs, ours_five, ours_arp = _ours(snap)
    assert _diff(ours_pairs, theirs.pairs) == {}, "(ours, tshark) per address pair"
    assert _diff(ours_arp, theirs.arp) == {}, "(ours, tshark) per ARP sender, target and opcode"
    # our unparsed frames are exactly those tshark keys no IP pair for
    assert (a.unparsed_packets, a.unparsed_bytes) == tuple(theirs.unkeyed)
    skip = theirs.fragmented
    ours_five = Counter({k: v for k, v in ours_five.items() if k[:3] not in skip})
    theirs_five = Counter({k: v for k, v in theirs.five.items() if k[:3] not in skip})
    assert _diff(ours_five, theirs_five) == {}, "(ours, tshark) per 5-tuple"
    # every listed exception still explains at least one frame
    assert set(exceptions) == set(theirs.excepted), (exceptions, theirs.excepted)


def test_every_listed_exception_is_a_corpus_file():
    if not FILES:
        pytest.skip(f"the capture corpus is missing ({CORPUS})")
    assert set(EXCEPTIONS) <= set(FILES)
