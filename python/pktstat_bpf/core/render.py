"""Text and JSON renderings of flows, shared by every output path (final
report, JSON Lines stream, TUI rows), so each format has one implementation.

Everything a process or a packet controls (comm, cgroup path) is escaped in
text: no terminal control character ever reaches the screen. JSON escapes
through the encoder (``ensure_ascii``), so it is always valid and inert.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import numpy as np

from . import protocols
from .addresses import address_strings

#: A conversation's endpoints in JSON (a flow's field -> its name).
PAIRED_NAMES = {"srcIp": "clientIp", "dstIp": "serverIp", "srcPort": "clientPort", "dstPort": "serverPort"}

KINDS = ("data", "retransmit")  # enum flow_kind: what a flow's counts are

#: One letter per TCP flag bit, lowest bit first (FIN 0x01 ... CWR 0x80): the
#: order tcpdump and SiLK's rwcut print them in; tcpdump's letters except ACK
#: (tcpdump ".") and CWR (tcpdump "W"), as SiLK spells them.
TCP_FLAG_LETTERS = "FSRPAUEC"


def tcp_flags_text(flags: int) -> str:
    """The letters of the bits set in a TCP flag byte: ``0x13`` -> ``"FSA"``."""
    return "".join(ch for i, ch in enumerate(TCP_FLAG_LETTERS) if flags >> i & 1)


def format_bitrate(bps: float) -> str:
    """Decimal units, two decimals: ``1234.5`` -> ``"1.23 Kbps"``."""
    for unit, scale in (("Tbps", 1e12), ("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.2f} bps"


def escape_text(s: str) -> str:
    """Make `s` safe for a terminal: control/format characters and backslashes
    become Python-style escapes (``\\x1b``, ``\\n``, ``\\u202e``)."""
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable() and unicodedata.category(ch)[0] != "C":
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if ch not in "'\"" else ch)
    return "".join(out)


def rfc3339(ns: int | np.datetime64) -> str:
    """Unix-epoch nanoseconds -> ``2026-11-25T16:40:23.123456789Z``."""
    ns = int(ns.astype("datetime64[ns]").astype(np.int64)) if isinstance(ns, np.datetime64) else int(ns)
    sec, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def decode_comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def flow_dicts(
    records: np.ndarray,
    duration: float,
    *,
    ifnames: Mapping[int, str] | None = None,
    cgroups: Mapping[int, str] | None = None,
    owners: bool = False,
    columns: Mapping[str, np.ndarray] | None = None,
    labels: bool = True,
    paired: bool = False,
) -> list[dict[str, Any]]:
    """Records -> JSON-ready dicts with pktstat-bpf's camelCase field names,
    in the order of `records`; ARP, ESP/AH, GRE and OSPF flows add the fields
    their port slots carry (:func:`protocols.header_fields`: ``arpOp``,
    ``spi`` ...). TCP and UDP flows carry ``appProto`` (a name of
    :data:`protocols.APP_NAMES`) unless `labels` is false (process mode:
    :func:`protocols.app_labelled`). `owners` adds pid/comm/cgroup; `columns`
    (snake_case name -> array aligned with records) adds one camelCase field
    each, left out of a row where its value is None. `paired`: the records
    are conversations (:mod:`conversations`), whose endpoints are
    ``clientIp``/``clientPort`` and ``serverIp``/``serverPort``."""
    n = len(records)
    if n == 0:
        return []
    src = address_strings(records["saddr"], records["ipver"])
    dst = address_strings(records["daddr"], records["ipver"])
    scale = 8.0 / duration if duration > 0 else 0.0
    out = []
    ifnames = ifnames or {}
    extra = [(camel(k), v) for k, v in (columns or {}).items()]
    apps = protocols.app_codes(records, labels).tolist()
    for i, r in enumerate(records):
        proto = protocols.flow_name(int(r["proto"]), int(r["ipver"]))
        sport, dport = int(r["sport"]), int(r["dport"])
        d: dict[str, Any] = {
            "srcIp": src[i],
            "dstIp": dst[i],
            "proto": proto,
            "srcPort": sport,
            "dstPort": dport,
            "bytes": int(r["bytes"]),
            "packets": int(r["packets"]),
            "bitrate": int(r["bytes"]) * scale,
        }
        if apps[i] >= 0:
            d["appProto"] = protocols.APP_NAMES[apps[i]]
        if proto in _FIELDED_NAMES:
            d.update(protocols.header_fields(proto, sport, dport))
        ifindex = int(r["ifindex"])
        if ifindex:
            d["iface"] = ifnames.get(ifindex, str(ifindex))
        direction = protocols.FLOW_DIRECTIONS[int(r["dir"])] if int(r["dir"]) < 3 else ""
        if direction:
            d["direction"] = direction
        kind = int(r["kind"])
        if kind:  # process mode: TCP retransmissions are flows of their own
            d["kind"] = KINDS[kind] if kind < len(KINDS) else str(kind)
        if owners:
            d["pid"] = int(r["pid"])
            d["comm"] = decode_comm(bytes(r["comm"]))
            cg = int(r["cgroup_id"])
            d["cgroup"] = (cgroups or {}).get(cg, "") if cg else ""
        flags = int(r["tcp_flags"])
        if flags:  # a TCP header was seen (never in process mode: no headers there)
            d["tcpFlags"] = tcp_flags_text(flags)
            d["synPackets"] = int(r["syn_packets"])
            d["finPackets"] = int(r["fin_packets"])
            d["rstPackets"] = int(r["rst_packets"])
        d.update(health_fields(r))
        d["firstSeen"] = rfc3339(r["first_seen"])
        d["lastSeen"] = rfc3339(r["last_seen"])
        for name, values in extra:
            v = values[i]
            if v is not None:
                d[name] = v.item() if isinstance(v, np.generic) else v
        out.append({PAIRED_NAMES.get(k, k): v for k, v in d.items()} if paired else d)
    return out


_FIELDED_NAMES = frozenset({"ARP"} | {protocols.name(p) for p in protocols.FIELDED - protocols.ICMP})


def header_text(d: Mapping[str, Any]) -> str:
    """The fields of an ARP, ESP/AH, GRE or OSPF flow dict as the text line
    shows them (``, op: request``, ``, spi: 0x0000d4a5`` ...); empty otherwise."""
    if "arpOp" in d:
        return f", op: {d['arpOp']}"
    if "spi" in d:
        return f", spi: 0x{d['spi']:08x}"
    if "greInner" in d:
        return f", inner: {d['greInner']}, flags: 0x{d['greFlags']:04x}"
    if "ospfType" in d:
        return f", type: {d['ospfType']}, version: {d['ospfVersion']}"
    return ""


def camel(name: str) -> str:
    """``total_bytes`` -> ``totalBytes``."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def endpoints(d: Mapping[str, Any]) -> tuple[str, str]:
    """Source and destination as text: ``ip:port`` for protocols with ports
    (IPv6 bracketed), the bare IP otherwise, each followed by the pod name
    (``srcPod``/``dstPod``, escaped) where one is known."""
    proto_num = protocols.NUMBERS.get(str(d["proto"]).lower(), -1)
    out = []
    for side in ("client", "server") if "clientIp" in d else ("src", "dst"):
        ip = d[f"{side}Ip"]
        text = _endpoint(ip, d[f"{side}Port"]) if proto_num in protocols.PORTED else ip
        pod = d.get(f"{side}Pod")
        if pod:
            text += f" ({escape_text(pod)})"
        out.append(text)
    return out[0], out[1]


def text_line(d: Mapping[str, Any]) -> str:
    """One flow as pktstat-bpf prints it (IPv6 endpoints bracketed)."""
    proto_num = protocols.NUMBERS.get(str(d["proto"]).lower(), -1)
    head = (
        f"bitrate: {format_bitrate(d['bitrate'])}, packets: {d['packets']}, "
        f"bytes: {d['bytes']}, proto: {d['proto']}"
    )
    app = protocols.app_text(d.get("appProto"))
    if app:  # pending and process mode: nothing; unknown: "?"
        head += f", app: {escape_text(app)}"
    head += names_text(d)
    src, dst = endpoints(d)
    if "clientIp" in d:  # a conversation: its two directions as packets/bytes
        body = f", client: {src}, server: {dst}, c2s: {d['c2sPackets']}/{d['c2sBytes']}, "
        body += f"s2c: {d['s2cPackets']}/{d['s2cBytes']}"
    else:
        body = f", src: {src}, dst: {dst}"
    if proto_num in protocols.ICMP:
        body += (
            f", type: {d.get('srcPort', d.get('clientPort'))}, code: {d.get('dstPort', d.get('serverPort'))}"
        )
    body += header_text(d)
    if d.get("kind"):
        body += f", kind: {d['kind']}"
    if d.get("tcpFlags"):
        body += f", flags: {d['tcpFlags']}, syn: {d['synPackets']}, fin: {d['finPackets']}, rst: {d['rstPackets']}"
    body += health_text(d)
    tail = ""
    if d.get("pid"):
        tail += f", pid: {d['pid']}"
    if d.get("comm"):
        tail += f", comm: {escape_text(d['comm'])}"
    if d.get("cgroup"):
        tail += f", cgroup: {escape_text(d['cgroup'])}"
    if d.get("drops"):
        tail += f", drops: {d['drops']} ({drop_reasons_text(d.get('dropReasons') or {})})"
    return head + body + tail


def health_fields(r: np.void) -> dict[str, int]:
    """A flow record's TCP health as JSON fields: ``retransPackets`` and
    ``retransBytes`` where it retransmitted, ``rttSamples`` and
    ``rttMinNs``/``rttMeanNs``/``rttMaxNs`` where a round trip was timed."""
    d = {}
    if int(r["retrans_packets"]):
        d["retransPackets"] = int(r["retrans_packets"])
        d["retransBytes"] = int(r["retrans_bytes"])
    n = int(r["rtt_samples"])
    if n:
        d["rttSamples"] = n
        d["rttMinNs"] = int(r["rtt_min"].astype(np.int64))
        d["rttMeanNs"] = int(r["rtt_sum"].astype(np.int64)) // n
        d["rttMaxNs"] = int(r["rtt_max"].astype(np.int64))
    return d


def health_text(d: Mapping[str, Any]) -> str:
    """A flow dict's TCP health as the text line shows it (``, retrans: 3``,
    ``, rtt: 0.21/0.35/1.9 ms``: min/mean/max); empty without it."""
    out = ""
    if d.get("retransPackets"):
        out += f", retrans: {d['retransPackets']}"
    if d.get("rttSamples"):
        ms = [d[k] / 1e6 for k in ("rttMinNs", "rttMeanNs", "rttMaxNs")]
        out += ", rtt: " + "/".join(f"{x:.3g}" for x in ms) + " ms"
    return out


def names_text(d: Mapping[str, Any]) -> str:
    """A flow dict's names as the text line shows them (``, sni: example.org,
    alpn: h2``, ``, host: example.org``, ``, dns: example.org A NXDOMAIN``,
    ``, quic: 1``, ``, dns-answer: example.org`` for a name from a DNS
    answer), escaped; empty without names."""
    out = ""
    if d.get("serverName"):
        out += f", sni: {escape_text(d['serverName'])}"
    if d.get("alpn"):
        out += f", alpn: {escape_text(d['alpn'])}"
    if d.get("httpHost"):
        out += f", host: {escape_text(d['httpHost'])}"
    if d.get("dnsQuery"):
        out += f", dns: {escape_text(d['dnsQuery'])} {d.get('dnsQtype') or ''}".rstrip()
        if d.get("dnsRcode"):
            out += f" {d['dnsRcode']}"
    if d.get("quicVersion"):
        out += f", quic: {d['quicVersion']}"
    if d.get("dnsName"):  # the name a DNS answer gave the flow's remote address
        out += f", dns-answer: {escape_text(d['dnsName'])}"
    return out


def drop_reasons_text(reasons: Mapping[str, int]) -> str:
    """``NETFILTER_DROP`` for one reason, ``NO_SOCKET:2,NETFILTER_DROP:12`` for several."""
    if len(reasons) == 1:
        return escape_text(next(iter(reasons)))
    return ",".join(f"{escape_text(k)}:{v}" for k, v in reasons.items())


def text_lines(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    return [text_line(d) for d in dicts]


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """JSON with every non-ASCII and control character escaped."""
    return json.dumps(obj, indent=indent, ensure_ascii=True, allow_nan=False)


# -- streams ------------------------------------------------------------------
# One line renderer per format, shared by every stream (--jsonl, --plain,
# -u/--unique with either): a flow dict of an interval plus its timestamp.


def jsonl_line(d: Mapping[str, Any], timestamp: str, **fields: Any) -> str:
    """``{"timestamp": ..., <fields>, <flow>}`` on one line."""
    return dumps({"timestamp": timestamp, **fields, **d})


def stamped_text_line(d: Mapping[str, Any], timestamp: str, **fields: Any) -> str:
    """``<timestamp> <text_line>``: a log line (pktstat-kube's ``--plain``)."""
    return f"{timestamp} {text_line(d)}"


STREAM_FORMATS = {"jsonl": jsonl_line, "text": stamped_text_line}


def end_record(d: Mapping[str, Any]) -> dict[str, Any]:
    """A flow dict of an end record (``Interval.ended``) as the streams
    write it: ``event`` and ``reason`` first, ``packets``/``bytes`` what
    the flow did since its previous record (so a flow's records sum to its
    totals), ``totalPackets``/``totalBytes`` its lifetime counts; no bitrate."""
    out: dict[str, Any] = {"event": "end", "reason": d["endReason"]}
    skip = {"bitrate", "endReason", "deltaPackets", "deltaBytes", "packets", "bytes"}
    for k, v in d.items():
        if k == "packets":
            out["packets"] = d["deltaPackets"]
        elif k == "bytes":
            out["bytes"] = d["deltaBytes"]
        if k not in skip:
            out[k] = v
    out["totalPackets"], out["totalBytes"] = d["packets"], d["bytes"]
    return out


def jsonl_end_line(d: Mapping[str, Any], timestamp: str) -> str:
    """``{"timestamp": ..., "event": "end", "reason": ..., <flow>}``."""
    return dumps({"timestamp": timestamp, **end_record(d)})


def stamped_end_line(d: Mapping[str, Any], timestamp: str) -> str:
    """``<timestamp> end: <reason>, packets: <total>, bytes: <total>, proto: ...``."""
    line = text_line({**d, "bitrate": 0.0}).split(", ", 1)[1]
    return f"{timestamp} end: {escape_text(str(d['endReason']))}, {line}"


END_FORMATS = {"jsonl": jsonl_end_line, "text": stamped_end_line}
