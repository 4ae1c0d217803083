"""IPFIX (RFC 7011) export of flow records: messages encoded in NumPy, sent
to a collector over UDP or TCP.

Every record of a :class:`~pktstat_bpf.output.flowrecords.FlowBatch` becomes
one data record of the template of its address family. A message is one
fixed-size NumPy structured element (header, set header, k records) with
big-endian fields, so a batch of n records is a few array assignments and one
``tobytes()``, with no Python loop over records or messages
(``bench/bench_flowrecords.py``: millions of records per second).

Templates (IANA information elements; the enterprise elements carry
:data:`PEN`, the RFC 5612 example enterprise number, a placeholder until
pktstat-bpf has a PEN of its own):

- 256 (IPv4) and 257 (IPv6): source and destination address (8/12, 27/28),
  sourceTransportPort 7, destinationTransportPort 11, protocolIdentifier 4,
  icmpTypeCodeIPv4 32 / icmpTypeCodeIPv6 139 (ports 0 for ICMP, ESP/AH, GRE
  and OSPF; ARP flows are not IP flows and are not exported),
  octetDeltaCount 1, packetDeltaCount 2, flowStartMilliseconds 152,
  flowEndMilliseconds 153, flowEndReason 136, ingressInterface 10,
  tcpControlBits 6 (the OR of the flow's TCP flags; 0 for other protocols),
  and flowDirection 61 where the mode knows directions (not in a replay),
  then applicationName 96 (string of 16 octets, NUL-padded: the JSON
  ``appProto`` name, ``TLS``, ``pending``, ``unknown`` ...; empty for flows
  other than TCP and UDP) in every mode but process, which labels no flow;
- in the modes that read names (TC, XDP, replay), flows with names go in
  templates 260 (IPv4) and 261 (IPv6): the same elements, then the names
  (:mod:`ipfix_names`); flows without names keep 256/257's small records;
- in modes that attribute flows to processes (cgroup, process), templates
  258 and 259 add the enterprise elements processId (1, unsigned32),
  processName (2, string of 16 octets, the comm, NUL-padded), cgroupId
  (3, unsigned64) and flowKind (4, unsigned8: 0 data, 1 retransmission).

"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..core import protocols
from ..core.errors import PktstatError
from . import ipfix_names
from .flowrecords import FlowBatch

log = logging.getLogger("pktstat_bpf")

VERSION = 10
TEMPLATE_SET = 2
PEN = ipfix_names.PEN
#: UDP messages fit one 1500-byte Ethernet frame (IPv6 and UDP headers included)
UDP_MESSAGE = 1400
#: TCP messages: one set of many records (the IPFIX length field is 16 bits)
TCP_MESSAGE = 65000
DEFAULT_TEMPLATE_REFRESH = 60.0
#: errors of a connected UDP socket that mean a message was lost, not that the exporter is broken
_UDP_LOST = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOBUFS, errno.EAGAIN)

_HEADER = [
    ("version", ">u2"),
    ("length", ">u2"),
    ("export_time", ">u4"),
    ("sequence", ">u4"),
    ("domain", ">u4"),
    ("set_id", ">u2"),
    ("set_length", ">u2"),
]


@dataclass(frozen=True)
class Element:
    """One field of a template: information element id, length in octets,
    enterprise number (0: IANA), the NumPy type of its value, its name."""

    name: str
    ie: int
    length: int
    dtype: str
    pen: int = 0


_NOT_PORTS = np.array(sorted(protocols.FIELDED - protocols.ICMP), np.uint8)


#: applicationName of each APP_NAMES position (index -1, the last: no label applies)
_APP_VALUES = np.array([n.encode() for n in protocols.APP_NAMES] + [b""], "S16")


def _elements(ipv6: bool, direction: bool, owners: bool, apps: bool, names: bool = False) -> list[Element]:
    addr = "(16,)u1" if ipv6 else "(4,)u1"
    els = [
        Element(
            "sourceIPv6Address" if ipv6 else "sourceIPv4Address", 27 if ipv6 else 8, 16 if ipv6 else 4, addr
        ),
        Element(
            "destinationIPv6Address" if ipv6 else "destinationIPv4Address",
            28 if ipv6 else 12,
            16 if ipv6 else 4,
            addr,
        ),
        Element("sourceTransportPort", 7, 2, ">u2"),
        Element("destinationTransportPort", 11, 2, ">u2"),
        Element("protocolIdentifier", 4, 1, "u1"),
        Element("icmpTypeCodeIPv6" if ipv6 else "icmpTypeCodeIPv4", 139 if ipv6 else 32, 2, ">u2"),
        Element("octetDeltaCount", 1, 8, ">u8"),
        Element("packetDeltaCount", 2, 8, ">u8"),
        Element("flowStartMilliseconds", 152, 8, ">u8"),
        Element("flowEndMilliseconds", 153, 8, ">u8"),
        Element("flowEndReason", 136, 1, "u1"),
        Element("ingressInterface", 10, 4, ">u4"),
        Element("tcpControlBits", 6, 2, ">u2"),
    ]
    if direction:
        els.append(Element("flowDirection", 61, 1, "u1"))
    if apps:
        els.append(Element("applicationName", 96, 16, "S16"))
    if names:
        els += [Element(*e) for e in ipfix_names.ELEMENTS]
    if owners:
        els += [
            Element("processId", 1, 4, ">u4", PEN),
            Element("processName", 2, 16, "S16", PEN),
            Element("cgroupId", 3, 8, ">u8", PEN),
            Element("flowKind", 4, 1, "u1", PEN),
        ]
    return els


@dataclass(frozen=True)
class Template:
    """A template: its id, elements, and the packed big-endian NumPy dtype of
    one data record."""

    id: int
    elements: tuple[Element, ...]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(e.name, e.dtype) for e in self.elements])  # packed: no padding between fields

    def record(self) -> bytes:
        """The template record (template id, field count, field specifiers)."""
        out = bytearray(np.array([self.id, len(self.elements)], ">u2").tobytes())
        for e in self.elements:
            if e.pen:
                out += (
                    np.array([e.ie | 0x8000, e.length], ">u2").tobytes() + np.array([e.pen], ">u4").tobytes()
                )
            else:
                out += np.array([e.ie, e.length], ">u2").tobytes()
        return bytes(out)


def templates(
    *, direction: bool, owners: bool, apps: bool = True, names: bool = False
) -> tuple[Template, Template]:
    """The IPv4 and IPv6 templates of a mode (ids 256/257, or 258/259 with
    the owner elements); `apps`: with applicationName (all modes but
    process); `names`: the templates of the flows that have names (ids
    260/261: the name elements follow; the modes that read names)."""
    base = 260 if names else 258 if owners else 256
    return (
        Template(base, tuple(_elements(False, direction, owners, apps, names))),
        Template(base + 1, tuple(_elements(True, direction, owners, apps, names))),
    )


def fill_records(out: np.ndarray, batch: FlowBatch, rows: np.ndarray, template: Template) -> None:
    """Write the batch's `rows` (all of one family; shaped as `out`, which
    may be a strided view into messages) as data records of `template`."""
    r = batch.records
    names = set(template.dtype.names or ())
    ipv6 = template.elements[0].ie == 27
    shape = out.shape

    def col(name: str) -> np.ndarray:
        return r[name][rows].reshape(shape)

    saddr, daddr = r["saddr"][rows], r["daddr"][rows]
    if not ipv6:
        saddr, daddr = saddr[:, 12:], daddr[:, 12:]
    out[template.elements[0].name] = saddr.reshape(*shape, -1)
    out[template.elements[1].name] = daddr.reshape(*shape, -1)
    proto, sport, dport = col("proto"), col("sport"), col("dport")
    icmp = proto == (58 if ipv6 else 1)
    no_ports = icmp | np.isin(proto, _NOT_PORTS)  # ESP/AH, GRE, OSPF keep other fields there
    out["sourceTransportPort"] = np.where(no_ports, 0, sport)
    out["destinationTransportPort"] = np.where(no_ports, 0, dport)
    out[template.elements[5].name] = np.where(icmp, (sport << 8) | (dport & 0xFF), 0)
    out["protocolIdentifier"] = proto
    out["octetDeltaCount"] = col("bytes")
    out["packetDeltaCount"] = col("packets")
    out["flowStartMilliseconds"] = (batch.start_ns[rows] // 1_000_000).reshape(shape)
    out["flowEndMilliseconds"] = (batch.end_ns[rows] // 1_000_000).reshape(shape)
    out["flowEndReason"] = batch.reason[rows].reshape(shape)
    out["ingressInterface"] = col("ifindex")
    out["tcpControlBits"] = col("tcp_flags")  # the OR of the flow's flags (0 for other protocols)
    if "flowDirection" in names:
        out["flowDirection"] = np.minimum(col("dir"), 1)  # 0 ingress, 1 egress
    if "applicationName" in names:
        out["applicationName"] = _APP_VALUES[protocols.app_codes_of(col("app"), proto, col("ipver"))]
    if "serverName" in names:
        ipfix_names.fill(out, batch, rows, shape)
    if "processId" in names:
        out["processId"] = col("pid")
        out["processName"] = col("comm")
        out["cgroupId"] = col("cgroup_id")
        out["flowKind"] = col("kind")


class Encoder:
    """IPFIX messages of one observation domain: the templates, and data
    messages of at most `max_message` octets whose sequence numbers count
    the data records sent before them (RFC 7011 section 3.1)."""

    def __init__(
        self,
        *,
        domain: int = 0,
        max_message: int = UDP_MESSAGE,
        direction: bool = True,
        owners: bool = False,
        apps: bool = True,
        names: bool = False,
    ) -> None:
        self.domain = domain
        self.max_message = max_message
        self.templates = templates(direction=direction, owners=owners, apps=apps)
        #: the templates of flows with names (the records of the others stay small)
        self.named = templates(direction=direction, owners=owners, apps=apps, names=True) if names else None
        self.sequence = 0  # data records sent so far (mod 2^32 on the wire)

    def template_message(self, now: float | None = None) -> bytes:
        """One message with the template set (every template)."""
        body = b"".join(t.record() for t in (*self.templates, *(self.named or ())))
        return self._header(16 + 4 + len(body), now, TEMPLATE_SET, 4 + len(body)) + body

    def _header(self, length: int, now: float | None, set_id: int, set_length: int) -> bytes:
        h = np.zeros(1, _HEADER)
        h[0] = (
            VERSION,
            length,
            int(time.time() if now is None else now),
            self.sequence & 0xFFFFFFFF,
            self.domain,
            set_id,
            set_length,
        )
        return h.tobytes()

    def data_messages(self, batch: FlowBatch, now: float | None = None) -> Iterator[tuple[memoryview, int]]:
        """The batch's records as data messages: yields (buffer, message size)
        pairs, each buffer a run of messages of that size (the last one of a
        family shorter); the sequence number advances by every record."""
        export = int(time.time() if now is None else now)
        v6 = batch.records["ipver"] == 6
        v4 = batch.records["ipver"] == 4  # ARP flows (ipver 0) are not IP flows: not exported
        named = ipfix_names.named(batch) if self.named is not None else np.zeros(len(batch), bool)
        for i, mask in enumerate((v4, v6)):
            for template, which in (
                (self.templates[i], ~named),
                (self.named[i] if self.named else None, named),
            ):
                rows = np.flatnonzero(mask & which)
                if template is not None and len(rows):
                    yield from self._pack(batch, rows, template, export)

    def _pack(
        self, batch: FlowBatch, rows: np.ndarray, template: Template, export: int
    ) -> Iterator[tuple[memoryview, int]]:
        """Messages of `per` records each, the records written straight into
        them (one structured array of messages: no intermediate copy)."""
        per = max(1, (self.max_message - 20) // template.dtype.itemsize)
        n, at = len(rows), 0
        while at < n:
            k = min(per, n - at)
            m = (n - at) // k
            msg = np.dtype(_HEADER + [("records", template.dtype, (k,))])
            out = np.empty(m, msg)
            out["version"] = VERSION
            out["length"] = msg.itemsize
            out["export_time"] = export
            out["sequence"] = (self.sequence + np.arange(m, dtype=np.uint64) * k) & 0xFFFFFFFF
            out["domain"] = self.domain
            out["set_id"] = template.id
            out["set_length"] = msg.itemsize - 16
            fill_records(out["records"], batch, rows[at : at + m * k], template)
            self.sequence += m * k
            at += m * k
            yield out.view(np.uint8).data, msg.itemsize


def parse_target(text: str, transport: str | None = None) -> tuple[str, str, int]:
    """``--ipfix`` as (transport, host, port): ``HOST:PORT``, ``[V6]:PORT``,
    or ``udp://``/``tcp://`` in front; raises ValueError with the reason."""
    scheme = transport
    rest = text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme not in ("udp", "tcp"):
            raise ValueError(f"unknown transport {scheme!r} (udp or tcp)")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT, or tcp://HOST:PORT")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("expected HOST:PORT, [IPV6]:PORT, or tcp://HOST:PORT")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [IPV6]:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port {port!r} (expected 1-65535)")
    return scheme or "udp", host, int(port)


class Exporter:
    """Sends flow batches to one collector. UDP: templates at the start and
    again before data once `template_refresh` seconds have passed; a
    collector that is not listening (ICMP port unreachable: ECONNREFUSED on
    the connected socket) loses those messages: counted in
    :attr:`refused`, warned about once, and the run goes on. TCP: connected
    at the start (a refused or unreachable collector raises
    :class:`PktstatError`), templates once per connection."""

    def __init__(
        self,
        target: str,
        *,
        transport: str = "udp",
        host: str,
        port: int,
        domain: int = 0,
        template_refresh: float = DEFAULT_TEMPLATE_REFRESH,
        direction: bool = True,
        owners: bool = False,
        apps: bool = True,
        names: bool = False,
    ) -> None:
        self.target = target
        self.transport = transport
        self.template_refresh = template_refresh
        self.encoder = Encoder(
            domain=domain,
            max_message=UDP_MESSAGE if transport == "udp" else TCP_MESSAGE,
            direction=direction,
            owners=owners,
            apps=apps,
            names=names,
        )
        self.refused = 0  # UDP messages a closed port refused (ICMP errors seen)
        self.messages = 0
        self._templates_at: float | None = None
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            )
        except socket.gaierror as e:
            raise PktstatError(f"--ipfix: cannot resolve {host!r}: {e.strerror}") from None
        family, kind, proto, _, addr = infos[0]
        self.sock = socket.socket(family, kind, proto)
        try:
            if transport == "tcp":
                self.sock.settimeout(10)
            self.sock.connect(addr)
        except OSError as e:
            self.sock.close()
            raise PktstatError(f"--ipfix: cannot connect to {target}: {e.strerror or e}") from None
        self._send_templates()

    def _send_templates(self) -> None:
        self._send(self.encoder.template_message())
        self._templates_at = time.monotonic()

    def _send(self, message: bytes | memoryview) -> None:
        self.messages += 1
        for attempt in (0, 1):
            try:
                if self.transport == "tcp":
                    self.sock.sendall(message)
                else:
                    self.sock.send(message)
                return
            except OSError as e:
                if self.transport == "tcp" or e.errno not in _UDP_LOST:
                    raise PktstatError(f"--ipfix: cannot send to {self.target}: {e.strerror or e}") from None
                # an ICMP error about an earlier message (it was lost), reported on this send, which did
                # not go out: count it, warn once, and send this one again
                if not self.refused:
                    log.warning(
                        "warning: --ipfix: %s refuses UDP messages (%s): going on; messages sent "
                        "while it does are lost",
                        self.target,
                        e.strerror,
                    )
                self.refused += 1

    def tick(self) -> None:
        """Re-send the templates over UDP if a refresh is due (a collector
        started later learns them even while no flow ends)."""
        if (
            self.transport == "udp"
            and self._templates_at is not None
            and time.monotonic() - self._templates_at >= self.template_refresh
        ):
            self._send_templates()

    def write(self, batch: FlowBatch) -> None:
        """Send the batch's records (templates first where a refresh is due)."""
        self.tick()
        for buf, size in self.encoder.data_messages(batch):
            if self.transport == "tcp":
                self.messages += len(buf) // size - 1
                self._send(buf)
                continue
            view = memoryview(buf)
            for at in range(0, len(buf), size):
                self._send(view[at : at + size])

    def close(self) -> None:
        if self.refused:
            log.debug(
                "--ipfix: %d of %d messages to %s were refused", self.refused, self.messages, self.target
            )
        self.sock.close()
