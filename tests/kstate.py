"""Kernel state for the reliability tests, read independently of the engine:
the BPF objects a process holds (from /proc/<pid>/fdinfo, the kernel's own
account), whether an object id still exists, what is attached to an
interface or a cgroup, and programs that are *not ours*, loaded with raw
bpf() calls and attached with iproute2 or BPF_PROG_ATTACH, to prove that
pktstat-bpf leaves what was there before alone."""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import tempfile

from netns import NetnsPair, sh

_SYS_BPF = 321  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# bpf() commands and constants used here (include/uapi/linux/bpf.h)
BPF_PROG_LOAD, BPF_OBJ_PIN, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 6, 8, 9
_GET_FD_BY_ID = {"prog": 13, "map": 14, "link": 30}
PROG_SCHED_CLS, PROG_XDP, PROG_CGROUP_SKB = 3, 6, 8
CGROUP_INET_EGRESS = 1
F_ALLOW_MULTI = 2


def bpf(cmd: int, attr: bytearray) -> int:
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    rc = _libc.syscall(_SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


# ---- what a process holds -------------------------------------------------------
_ANON = {
    "anon_inode:bpf-prog": ("prog", "prog_id"),
    "anon_inode:bpf-map": ("map", "map_id"),
    "anon_inode:bpf_link": ("link", "link_id"),
}


def held(pid: int | str = "self") -> dict[str, set[int]]:
    """Ids of the BPF programs, maps and links process `pid` has file
    descriptors of."""
    out: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            kind, field = _ANON[os.readlink(f"{base}/{fd}")]
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except (KeyError, OSError):
            continue
        out[kind].add(int(info[field]))
    return out


def minus(a: dict[str, set[int]], b: dict[str, set[int]]) -> dict[str, set[int]]:
    return {k: a[k] - b[k] for k in a}


def alive(kind: str, obj_id: int) -> bool:
    """True while BPF object `obj_id` (a "prog", "map" or "link") exists."""
    attr = bytearray(12)
    struct.pack_into("=I", attr, 0, obj_id)
    try:
        os.close(bpf(_GET_FD_BY_ID[kind], attr))
        return True
    except FileNotFoundError:
        return False


def still_alive(ids: dict[str, set[int]]) -> dict[str, set[int]]:
    """The ids of `ids` that still exist (empty sets: all gone)."""
    return {k: {i for i in v if alive(k, i)} for k, v in ids.items()}


def nothing_alive(ids: dict[str, set[int]]) -> bool:
    return not any(still_alive(ids).values())


def janitors_of(prog_ids: set[int]) -> list[int]:
    """Pids of legacy-tc janitors (pktstat_bpf.core._janitor) whose plan names
    one of `prog_ids`: ours, not another test's."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"pktstat_bpf.core._janitor" in argv and len(argv) > 3:
            plan = json.loads(argv[3])
            if any(f["prog_id"] in prog_ids for f in plan["filters"]):
                out.append(int(pid))
    return out


# ---- what is attached ------------------------------------------------------------
def xdp_on(netns: NetnsPair, dev: str = "va") -> dict:
    """The XDP attachment of `dev` in namespace A as iproute2 reports it."""
    (link,) = json.loads(sh("ip", "-j", "link", "show", "dev", dev, netns=netns.ns_a).stdout)
    return link.get("xdp", {})


def xdp_prog(netns: NetnsPair, dev: str = "va") -> tuple[int, str] | None:
    x = xdp_on(netns, dev)
    if "prog" in x:
        return x["prog"]["id"], x["prog"].get("name", "")
    for a in x.get("attached", []):
        return a["prog"]["id"], a["prog"].get("name", "")
    return None


def cgroup_programs(cgdir: str) -> list[tuple[int, str]]:
    """(id, name) of the programs attached to cgroup directory `cgdir`."""
    r = sh("bpftool", "cgroup", "show", cgdir, "-j")
    return sorted((p["id"], p["name"]) for p in json.loads(r.stdout.strip() or "[]"))


# ---- programs that are not ours ------------------------------------------------------
def load_prog(prog_type: int, name: bytes, ret: int, expected_attach_type: int = 0) -> int:
    """Load `r0 = ret; exit` with a raw BPF_PROG_LOAD; returns its fd."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, ret) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    insn_buf = ctypes.create_string_buffer(insns)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("=IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insn_buf), ctypes.addressof(lic))
    attr[48 : 48 + len(name)] = name
    struct.pack_into("=I", attr, 68, expected_attach_type)
    return bpf(BPF_PROG_LOAD, attr)


def _attach_pinned(fd: int, attach) -> None:
    """Call attach(pinned path of program `fd`), then close `fd`. iproute2
    takes a pinned path, and remounts /sys in the namespace it switches to:
    pin in a private bpffs instance of our own instead."""
    mnt = tempfile.mkdtemp(prefix="pbt-bpffs-")
    try:
        subprocess.run(["mount", "-t", "bpf", "bpf", mnt], check=True)
        pin = os.path.join(mnt, "prog")
        path = ctypes.create_string_buffer(pin.encode())
        pattr = bytearray(16)
        struct.pack_into("=QI", pattr, 0, ctypes.addressof(path), fd)
        bpf(BPF_OBJ_PIN, pattr)
        attach(pin)
    finally:
        os.close(fd)
        subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)


def attach_other_xdp(netns: NetnsPair, how: str, dev: str = "va") -> int:
    """Load `r0 = XDP_PASS; exit` named "other_xdp" with a raw BPF_PROG_LOAD,
    attach it to `dev` with iproute2 (netlink, not a link: it stays after we
    close our fd), return its id."""
    fd = load_prog(PROG_XDP, b"other_xdp", 2)
    _attach_pinned(fd, lambda pin: sh("ip", "-n", netns.ns_a, "link", "set", "dev", dev, how, "pinned", pin))
    got = xdp_prog(netns, dev)
    assert got and got[1] == "other_xdp", got
    return got[0]


def attach_other_cgroup_skb(cgdir: str) -> int:
    """Attach a cgroup_skb egress program that lets everything pass (named
    "other_cg_skb") to `cgdir` with BPF_PROG_ATTACH and BPF_F_ALLOW_MULTI
    (so it stays after its fd is closed, until the cgroup goes); returns its id."""
    fd = load_prog(PROG_CGROUP_SKB, b"other_cg_skb", 1, CGROUP_INET_EGRESS)
    try:
        cg = os.open(cgdir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            attr = bytearray(32)
            struct.pack_into("=IIII", attr, 0, cg, fd, CGROUP_INET_EGRESS, F_ALLOW_MULTI)
            bpf(BPF_PROG_ATTACH, attr)
        finally:
            os.close(cg)
    finally:
        os.close(fd)
    (got,) = [p for p in cgroup_programs(cgdir) if p[1] == "other_cg_skb"]
    return got[0]


def add_other_tc_filters(netns: NetnsPair, dev: str = "va") -> None:
    """A clsact qdisc with a u32 filter (classid only: no action, the packet
    goes on) on each direction of `dev`, as an administrator would add."""
    sh("tc", "qdisc", "add", "dev", dev, "clsact", netns=netns.ns_a)
    for d, cls in (("ingress", "1:1"), ("egress", "1:2")):
        sh(
            "tc",
            "filter",
            "add",
            "dev",
            dev,
            d,
            "prio",
            "7",
            "protocol",
            "all",
            "u32",
            "match",
            "u32",
            "0",
            "0",
            "classid",
            cls,
            netns=netns.ns_a,
        )


def add_other_bpf_tc_filter(
    netns: NetnsPair, direction: str, name: bytes = b"tc_ingress", dev: str = "va"
) -> None:
    """A direct-action cls_bpf filter (prio 9) running `r0 = TC_ACT_UNSPEC;
    exit`, loaded with a raw BPF_PROG_LOAD under a name of ours, on the
    clsact `direction` of `dev` (which must have a clsact qdisc): someone
    else's filter that looks like pktstat-bpf's by name."""
    fd = load_prog(PROG_SCHED_CLS, name, -1)
    _attach_pinned(
        fd,
        lambda pin: sh(
            "tc",
            "filter",
            "add",
            "dev",
            dev,
            direction,
            "prio",
            "9",
            "bpf",
            "da",
            "pinned",
            pin,
            netns=netns.ns_a,
        ),
    )
