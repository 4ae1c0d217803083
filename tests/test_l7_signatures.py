"""src/bpf/l7.h, the application signatures the packet programs share, run
in user space: tests/l7_harness.c includes the header verbatim and is built
here with the system compiler. Every signature has positive and negative
byte-level cases."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pktstat_bpf.core.protocols import APP_NAMES

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "src" / "bpf" / "l7.h"


def txt(s: str) -> str:
    return s.encode().hex()


# (transport, payload length by the headers, captured bytes in hex, label)
CASES = [
    # HTTP/1.x: methods, responses, the h2c preface
    ("tcp", 40, txt("GET / HTTP/1.1\r\n"), "HTTP"),
    ("tcp", 40, txt("POST /a HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("HEAD / HTTP/1.0"), "HTTP"),
    ("tcp", 40, txt("PUT /x HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("DELETE /x HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("OPTIONS * HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("PATCH /x HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("CONNECT h:443 HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("TRACE / HTTP/1.1"), "HTTP"),
    ("tcp", 40, txt("HTTP/1.1 200 OK\r\n"), "HTTP"),
    ("tcp", 40, txt("PRI * HTTP/2.0\r\n"), "HTTP"),
    ("tcp", 40, txt("GETX / HTTP/1.1"), "unknown"),
    ("tcp", 40, txt("get / HTTP/1.1"), "unknown"),
    ("tcp", 40, txt("POSTX /"), "unknown"),
    ("tcp", 40, txt("HTTP/2 200"), "unknown"),
    ("udp", 40, txt("GET / HTTP/1.1\r\n"), "unknown"),
    # TLS records 0x14-0x17, version 3.0-3.4
    ("tcp", 517, "160301020001000001fc0303", "TLS"),
    ("tcp", 100, "1703030040deadbeef", "TLS"),
    ("tcp", 6, "140303000101", "TLS"),
    ("tcp", 7, "15030300020228", "TLS"),
    ("tcp", 100, "1803030040", "unknown"),
    ("tcp", 100, "1603050040", "unknown"),
    ("tcp", 100, "1602000040", "unknown"),
    ("tcp", 100, "16030100", "unknown"),  # 4 bytes captured: a record header is 5
    ("udp", 100, "1603030040", "unknown"),
    # SSH
    ("tcp", 21, txt("SSH-2.0-OpenSSH_9.2"), "SSH"),
    ("tcp", 21, txt("SSH 2.0"), "unknown"),
    ("udp", 21, txt("SSH-2.0-OpenSSH_9.2"), "unknown"),
    # RDP: TPKT + COTP connection request / confirm
    ("tcp", 43, "0300002b26e00000000000", "RDP"),
    ("tcp", 19, "030000130ed000001234", "RDP"),
    ("tcp", 43, "0300002b02f080", "unknown"),  # a data TPDU
    ("tcp", 43, "0301002b26e000", "unknown"),
    # PostgreSQL: SSLRequest, GSSENCRequest, v3.0 StartupMessage
    ("tcp", 8, "0000000804d2162f", "PostgreSQL"),
    ("tcp", 8, "0000000804d21630", "PostgreSQL"),
    ("tcp", 84, "0000005400030000757365720061", "PostgreSQL"),
    ("tcp", 16, "0000001004d2162e", "unknown"),  # CancelRequest is not a start
    ("tcp", 84, "0000005400020000", "unknown"),  # protocol 2.0
    ("tcp", 84, "0001005400030000", "unknown"),  # length >= 64 KiB
    # MQTT CONNECT
    ("tcp", 28, "101a00044d51545404020000", "MQTT"),
    ("tcp", 40, "102600064d5149736470030200", "MQTT"),
    ("tcp", 300, "10820200044d51545404", "MQTT"),
    ("tcp", 4, "20020000", "unknown"),  # CONNACK
    ("tcp", 28, "101a00044d51545504020000", "unknown"),
    # WireGuard message types 1-3 with their exact sizes
    ("udp", 148, "01000000aabbccdd", "WireGuard"),
    ("udp", 92, "02000000aabbccdd", "WireGuard"),
    ("udp", 64, "03000000aabbccdd", "WireGuard"),
    ("udp", 149, "01000000aabbccdd", "unknown"),
    ("udp", 92, "02000100aabbccdd", "unknown"),
    ("udp", 32, "04000000aabbccdd0100000000000000", "WireGuard"),  # transport data
    ("udp", 80, "04000000aabbccdd0100000000000000", "WireGuard"),
    ("udp", 40, "04000000aabbccdd0100000000000000", "unknown"),  # not a multiple of 16
    ("udp", 16, "04000000aabbccdd0100000000000000", "unknown"),  # too short
    ("udp", 32, "04000001aabbccdd0100000000000000", "unknown"),
    ("tcp", 148, "01000000aabbccdd", "unknown"),
    # an SSLv2-framed ClientHello offering TLS
    ("tcp", 51, "8031010301001800000010", "TLS"),
    ("tcp", 51, "8031010305001800000010", "unknown"),  # version 3.5
    ("tcp", 51, "8031020301001800000010", "unknown"),  # not a ClientHello
    # Memcached binary
    ("tcp", 29, "8000000500000000000000050000", "Memcached"),
    ("tcp", 28, "8100000004000000", "Memcached"),
    ("tcp", 24, "8027000000000000", "unknown"),  # opcode past 0x26
    ("tcp", 24, "8000000000010000", "unknown"),  # data type 1
    ("tcp", 24, "8200000000000000", "unknown"),
    # QUIC long headers: v1, v2, a draft, version negotiation
    ("udp", 1200, "c30000000108", "QUIC"),
    ("udp", 1200, "cf6b3343cf08", "QUIC"),
    ("udp", 1200, "c3ff00001d08", "QUIC"),
    ("udp", 60, "8a0000000008", "QUIC"),
    ("udp", 1200, "89ff00002208", "QUIC"),  # the fixed bit greased (RFC 9287)
    ("udp", 1200, "c60a0a0a0a08", "QUIC"),  # a reserved greasing version
    ("udp", 1200, "c63a4a5afa08", "QUIC"),
    ("udp", 1200, "c55130353008", "QUIC"),  # Google Q050
    ("udp", 1200, "c55430353108", "QUIC"),  # Google T051
    ("udp", 1200, "cafaceb00e08", "QUIC"),  # mvfst
    ("udp", 1200, "c55130613008", "unknown"),  # Q0a0: not digits
    ("udp", 1200, "c60a0a0a0b08", "unknown"),
    ("udp", 1200, "430000000108", "unknown"),  # short header
    ("udp", 1200, "c30000000208", "unknown"),
    ("udp", 1200, "c3deadbeef08", "unknown"),
    ("tcp", 1200, "c30000000108", "unknown"),
    # DTLS 1.0 / 1.2 records of epoch 0
    ("udp", 200, "16fefd00000000000000000030", "DTLS"),
    ("udp", 200, "16feff00000000000000000030", "DTLS"),
    ("udp", 200, "16fefd0001000000000000", "unknown"),  # 11 bytes: no whole record header
    ("udp", 200, "17fefd0001000000001a0d04bc", "DTLS"),  # epoch 1: a flow's middle
    ("udp", 200, "160100000000000000000000560100", "DTLS"),  # OpenSSL's pre-standard version
    ("udp", 200, "160200000000000000000000560100", "unknown"),
    ("udp", 200, "18fefd0001000000001a0d04bc", "unknown"),
    ("udp", 200, "16fe030000000000000000", "unknown"),
    # DNS over UDP and TCP by header sanity
    ("udp", 29, "abcd01000001000000000000076578616d706c65", "DNS"),
    ("udp", 45, "abcd81800001000200000000", "DNS"),
    ("udp", 29, "abcd78000001000000000000", "unknown"),  # opcode 15
    ("udp", 29, "abcd01000002000000000000", "DNS"),  # two questions (mDNS asks several)
    ("udp", 29, "abcd01000000000000000000", "unknown"),  # a query without a question
    ("udp", 29, "abcd84000000000200000000", "DNS"),  # an mDNS response: answers only
    ("udp", 29, "abcd84000000000000000000", "unknown"),  # a response of nothing
    ("udp", 29, "abcd04000000000200000000", "unknown"),  # answers only, but a query
    ("udp", 29, "abcd01400001000000000000", "unknown"),  # Z bit
    ("udp", 29, "abcd01000001010000000000", "unknown"),  # 256+ answers
    ("udp", 29, "abcd0100000100000000", "unknown"),  # 10 bytes: no whole header
    ("tcp", 31, "001dabcd01000001000000000000", "DNS"),
    ("tcp", 31, "0020abcd01000001000000000000", "unknown"),  # prefix is not the rest
    ("tcp", 31, "001dabcd01000002000000000000", "DNS"),
    ("tcp", 31, "001dabcd01000000000000000000", "unknown"),
    # PostgreSQL: the server's one-byte answers, in a connection seen opening
    ("tcpo", 1, "47", "PostgreSQL"),
    ("tcpo", 1, "4e", "PostgreSQL"),
    ("tcpo", 1, "53", "PostgreSQL"),
    ("tcp", 1, "53", "unknown"),  # no opening seen: a byte mid-stream
    ("tcpo", 2, "530a", "unknown"),
    ("tcpo", 1, "58", "unknown"),
    # PostgreSQL: the server's authentication request
    ("tcp", 13, "520000000c00000005ad44ff54", "PostgreSQL"),
    ("tcp", 9, "52000000080000000053", "PostgreSQL"),
    ("tcp", 9, "520000000400000000", "unknown"),  # length below 8
    ("tcp", 9, "520000000c01000005", "unknown"),
    # SMTP, IMAP, POP3
    ("tcp", 40, txt("220 mail.example ESMTP"), "SMTP"),
    ("tcp", 40, txt("220-mail.example"), "SMTP"),
    ("tcp", 20, txt("EHLO client\r\n"), "SMTP"),
    ("tcp", 20, txt("HELO client\r\n"), "SMTP"),
    ("tcp", 20, txt("250 OK\r\n"), "unknown"),
    ("tcp", 30, txt("* OK [CAPABILITY IMAP4rev1]"), "IMAP"),
    ("tcp", 30, txt("* PREAUTH ready"), "IMAP"),
    ("tcp", 30, txt("* BYE"), "unknown"),
    ("tcp", 14, txt(". CAPABILITY\r\n"), "IMAP"),
    ("tcp", 20, txt("a001 LOGIN bob pw\r\n"), "IMAP"),
    ("tcp", 13, txt("A1 STARTTLS\r\n"), "IMAP"),
    ("tcp", 25, txt("x1 AUTHENTICATE PLAIN\r\n"), "IMAP"),
    ("tcp", 20, txt("abcde CAPABILITY\r\n"), "unknown"),  # a 5-byte tag
    ("tcp", 11, txt("a1 LOGOUT\r\n"), "unknown"),
    ("tcp", 20, txt("+OK POP3 ready\r\n"), "POP3"),
    ("tcp", 20, txt("USER bob\r\n"), "POP3"),
    ("tcp", 20, txt("CAPA\r\n"), "POP3"),
    ("tcp", 20, txt("APOP bob c4c9\r\n"), "POP3"),
    ("tcp", 20, txt("-ERR no\r\n"), "unknown"),
    ("udp", 20, txt("+OK POP3 ready\r\n"), "unknown"),
    # nothing captured
    ("tcp", 0, "-", "unknown"),
    ("udp", 0, "-", "unknown"),
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "no C compiler"
    out = tmp_path_factory.mktemp("l7") / "l7_harness"
    flags = ["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(HEADER.parent)]
    subprocess.run([cc, *flags, "-o", str(out), str(ROOT / "tests" / "l7_harness.c")], check=True)
    return out


def classify(harness: Path, cases) -> list[str]:
    lines = "".join(f"{p} {n} {h}\n" for p, n, h, *_ in cases)
    got = subprocess.run([str(harness)], input=lines, capture_output=True, text=True, check=True).stdout
    return [APP_NAMES[int(x)] for x in got.split()]


def test_python_names_follow_the_header_enum():
    enum = dict(re.findall(r"L7_APP_(\w+) = (\d+),", HEADER.read_text()))
    assert int(enum.pop("NR")) == len(APP_NAMES)
    spelled = {
        "NONE": "pending",
        "POSTGRES": "PostgreSQL",
        "WIREGUARD": "WireGuard",
        "MEMCACHED": "Memcached",
    }
    for name, value in enum.items():
        want = spelled.get(name, name if len(name) <= 5 else name.title())
        assert APP_NAMES[int(value)].lower() == want.lower(), name


def test_every_signature_case(harness):
    got = classify(harness, CASES)
    wrong = [(p, n, h, want, g) for (p, n, h, want), g in zip(CASES, got, strict=True) if g != want]
    assert not wrong


def test_every_label_has_a_positive_and_a_negative_case():
    labels = {want for *_, want in CASES}
    assert labels == set(APP_NAMES) - {"pending"}
    for app in labels - {"unknown"}:
        # a negative case: the same first byte as a positive one, not labelled
        firsts = {h[:2] for *_, h, want in CASES if want == app}
        assert any(h[:2] in firsts and want != app for *_, h, want in CASES), app


def test_only_the_first_window_is_looked_at(harness):
    """Bytes after L7_WINDOW (16) change nothing: a signature that needed
    them could not run in the kernel. (Cases with the whole window captured,
    then more bytes after it.)"""
    whole = [c for c in CASES if len(c[2]) >= 32]
    assert len(whole) >= 5
    cases = [(p, n, h + "ff" * 40, want) for p, n, h, want in whole]
    assert classify(harness, cases) == [want for *_, want in whole]
