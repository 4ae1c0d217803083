"""deploy/: the Kubernetes manifests and the image recipe, checked without a
cluster: every field is one the Kubernetes API knows (the official Python
client's models), names, selectors and ports agree across objects, and the
container's arguments parse with the CLI's own parser into the exporter
docs/exporter.md describes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cgroups import TestCgroup, cgroup2_mount
from kstate import held, nothing_alive, still_alive
from netns import wait_for
from traffic import ETH, ICMP, IP4, UDP, ping, send_udp

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
APP = {"app.kubernetes.io/name": "pktstat-bpf", "app.kubernetes.io/component": "exporter"}


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    docs = load("daemonset.yaml")
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "DaemonSet", "Service"]
    return {d["kind"]: d for d in docs}


def container(objects) -> dict:
    (c,) = objects["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    return c


# -- schema: every key is a field of the Kubernetes API object -------------------------


def check_fields(value, type_name: str, path: str, errors: list[str]) -> None:
    """Walk `value` along the kubernetes client's model `type_name`
    (``V1DaemonSet``, ``List[V1Container]``, ``Dict[str, str]``, ``str`` ...;
    older clients spell them ``list[...]``, ``dict(str, ...)``)
    and collect every key the API does not know."""
    from kubernetes import client

    m = re.fullmatch(r"(?:list|List)\[(.+)\]|(?:dict\(|Dict\[)str, (.+)[\])]", type_name)
    if m and m.group(1):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            check_fields(v, m.group(1), f"{path}[{i}]", errors)
        return
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return
        for k, v in value.items():
            check_fields(v, m.group(2), f"{path}.{k}", errors)
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in simple:
        if not isinstance(value, simple[type_name]) or (type_name == "int" and isinstance(value, bool)):
            errors.append(f"{path}: expected {type_name}, not {value!r}")
        return
    if type_name == "object":  # IntOrString, RawExtension ...
        return
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} mapping")
        return
    by_json = {j: a for a, j in model.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            errors.append(f"{path}.{k}: not a field of {type_name}")
            continue
        check_fields(v, model.openapi_types[by_json[k]], f"{path}.{k}", errors)


def test_every_field_is_known_to_the_kubernetes_api(objects):
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (pip install '.[test]')")
    errors: list[str] = []
    for kind, obj in objects.items():
        check_fields(obj, f"V1{kind}", kind, errors)
    assert errors == []


# -- consistency across objects -------------------------------------------------------------


def test_names_selectors_and_ports_agree(objects):
    ns = objects["Namespace"]["metadata"]["name"]
    for kind in ("ServiceAccount", "DaemonSet", "Service"):
        assert objects[kind]["metadata"]["namespace"] == ns, kind
    ds = objects["DaemonSet"]
    tmpl = ds["spec"]["template"]
    labels = tmpl["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"] == APP
    assert APP.items() <= labels.items()
    svc = objects["Service"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["clusterIP"] == "None"  # headless: one endpoint per node
    assert tmpl["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]

    c = container(objects)
    (port,) = c["ports"]
    (sport,) = svc["spec"]["ports"]
    assert sport["targetPort"] == port["name"] == "metrics"
    assert sport["port"] == port["containerPort"]
    for annotated in (svc["metadata"]["annotations"], tmpl["metadata"]["annotations"]):
        assert annotated == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port["containerPort"]),
            "prometheus.io/path": "/metrics",
        }
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}

    (sm,) = load("servicemonitor.yaml")
    assert sm["kind"] == "ServiceMonitor" and sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == ns and sm["spec"]["namespaceSelector"]["matchNames"] == [ns]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == sport["name"] and ep["path"] == "/metrics"


def test_node_access_is_exactly_what_the_exporter_needs(objects):
    spec = objects["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["hostPID"] is False  # TC mode reads no /proc of other processes
    assert spec["automountServiceAccountToken"] is False
    assert {"operator": "Exists"} in spec["tolerations"]
    c = container(objects)
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "PERFMON"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts.keys() == volumes.keys() == {"btf", "cgroup", "run"}
    for name, path in (("btf", "/sys/kernel/btf"), ("cgroup", "/sys/fs/cgroup")):
        assert mounts[name]["mountPath"] == volumes[name]["hostPath"]["path"] == path
        assert mounts[name]["readOnly"] is True
    # the legacy-tc claim files, kept across pods (the next pod cleans what a killed one left)
    assert mounts["run"] == {"name": "run", "mountPath": "/run/pktstat-bpf"}
    assert volumes["run"]["hostPath"] == {"path": "/run/pktstat-bpf", "type": "DirectoryOrCreate"}
    assert 'kClaimDir = "/run/pktstat-bpf"' in (ROOT / "src" / "cpp" / "tc_claims.cpp").read_text()
    res = c["resources"]
    assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}


# -- the container command is a valid CLI invocation ---------------------------------------


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args ($$ escapes;
    an undefined variable stays as written)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def test_container_args_parse_with_the_cli_parser(objects):
    from pktstat_bpf.cli.options import parse_args

    c = container(objects)
    fields = {"status.podIP": "10.20.30.40"}  # what the kubelet would fill in
    env = {e["name"]: fields[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in c["env"]}
    argv = [expand(a, env) for a in c["args"]]
    assert all("$(" not in a for a in argv), argv
    # the image of this version, running the console script the package installs
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert c["image"] == f"pktstat-bpf:{version}"
    assert c["command"] == ["pktstat-bpf"]
    assert re.search(r'^pktstat-bpf = "pktstat_bpf\.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.M)
    args = parse_args(argv)
    (port,) = c["ports"]
    assert args.prometheus == ("10.20.30.40", port["containerPort"])
    assert args.timeout == 0.0  # runs until the kubelet's SIGTERM
    assert (args.prometheus_top, args.refresh, args.max_entries) == (100, 5.0, 65536)
    assert not (args.json or args.jsonl or args.plain or args.tui)
    # the liveness limit (3 x refresh + 10 s) stays under the probe's failure window
    probe = c["livenessProbe"]
    assert 3 * args.refresh + 10 < probe["periodSeconds"] * probe["failureThreshold"]


def _depends_closure(pkgs: set[str]) -> set[str]:
    """`pkgs` and everything they (pre-)depend on, as dpkg records it here."""
    seen: set[str] = set()
    todo = [p.split(":")[0] for p in pkgs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p], capture_output=True, text=True
        )
        for alt in out.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


def test_image_runs_the_same_cli_and_carries_every_linked_library():
    text = (DEPLOY / "Dockerfile").read_text()
    assert '".[prometheus]"' in text
    assert 'ENTRYPOINT ["pktstat-bpf"]' in text
    stages = text.split("\nFROM ")
    runtime = stages[-1]
    pkgs = set(
        re.search(r"install -y -q --no-install-recommends \\\n(.*?)\\\n", runtime, re.S).group(1).split()
    )
    if not (shutil.which("ldd") and shutil.which("dpkg")):
        pytest.skip("ldd/dpkg not available to list the engine's libraries")
    from pktstat_bpf import _core

    libs = re.findall(
        r"=> (/\S+)", subprocess.run(["ldd", _core.__file__], capture_output=True, text=True).stdout
    )
    owners = set()
    for lib in libs:
        out = subprocess.run(["dpkg", "-S", Path(lib).resolve().as_posix()], capture_output=True, text=True)
        if out.returncode:
            out = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        owners.add(out.stdout.split(":")[0])
    base = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:bookworm-slim (apt needs them)
    # apt installs what the listed packages depend on, so a library of one of
    # those (libpcap0.8 links libdbus-1-3 ...) is in the image too
    assert owners - base <= _depends_closure(pkgs), (owners, pkgs)
    assert {"libbpf1", "libelf1", "zlib1g"} <= owners


# -- the capabilities it grants are the ones the CLI needs ------------------------------------

#: every mode and both tc attach paths: (id, flags, how the CLI enters namespace A: `ip netns
#: exec` where it needs va's /sys, nsenter, which keeps this /sys so cgroup paths resolve)
CAP_MODES = [
    ("tc", ["-i", "va"], "ip"),
    ("tc-legacy", ["-i", "va", "--tc-attach", "legacy"], "ip"),
    ("xdp", ["-i", "va", "-x"], "ip"),
    ("cgroup", ["-c", "{cg}"], "nsenter"),
    ("process", ["-k"], "nsenter"),
]
#: root: uid 0 holding only the capabilities (a bounding set, as a container runtime grants
#: them); nobody: user nobody with them inheritable and ambient (as systemd's AmbientCapabilities=)
USERS = ["root", "nobody"]


def _run_with_caps(ns, cg, mode: str, user: str, caps: list[str], send: bool):
    """The CLI in `mode` as `user` holding only `caps`, counting for 2 s,
    while this process makes 5 packets of its kind of traffic if `send`.
    Returns the run and the key of the flow those packets make, with their
    (packets, bytes)."""
    from test_cli import _unprivileged_python, _world_usable

    _, flags, enter = next(m for m in CAP_MODES if m[0] == mode)
    flags = [f.format(cg=cg.child("target")) for f in flags]
    prefix = (
        ["ip", "netns", "exec", ns.ns_a] if enter == "ip" else ["nsenter", f"--net=/var/run/netns/{ns.ns_a}"]
    )
    listed = ",".join(f"+{c.lower()}" for c in caps)
    if user == "root":
        python, env = sys.executable, None
        who = [
            "setpriv",
            f"--bounding-set={','.join(['-all', *listed.split(',')]) if caps else '-all'}",
            "--inh-caps=-all",
        ]
    else:
        site = str(Path(__import__("pktstat_bpf").__file__).parent.parent)
        if not _world_usable(site):
            pytest.skip(f"{site} is not readable by user nobody")
        python, env = _unprivileged_python(), {"PYTHONPATH": site, "PATH": "/usr/bin:/bin", "HOME": "/"}
        amb = f"-all,{listed}" if caps else "-all"
        who = [
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            f"--inh-caps={amb}",
            f"--ambient-caps={amb}",
        ]
    p = subprocess.Popen(
        [*prefix, *who, python, "-m", "pktstat_bpf", *flags, "-t", "2s", "-j"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = p.stderr.readline()
    want = None
    if send and first.startswith("pktstat-bpf: counting on"):
        if mode == "xdp":  # XDP sees what arrives: the echo replies
            with ns.in_a():
                assert ping(ns.B4, 5, 32) == 5
            want = (ns.B4, ns.A4, 0, 0, "ingress"), (5, 5 * (ETH + IP4 + ICMP + 32))
        elif mode == "cgroup":  # a process of the cgroup sends
            (sport,) = cg.run(
                cg.child("target"), "pbt-capsend", "udp-send", ns.B4, "5399", "5", "50", netns=ns.ns_a
            )
            want = (ns.A4, ns.B4, int(sport), 5399, "egress"), (5, 5 * (IP4 + UDP + 50))
        else:
            with ns.in_a():
                sport = send_udp(ns.B4, 5399, 5, 50)
            if mode == "process":  # the socket's view: payload bytes, an unbound source address
                want = ("0.0.0.0", ns.B4, sport, 5399, "egress"), (5, 5 * 50)
            else:
                want = (ns.A4, ns.B4, sport, 5399, "egress"), (5, 5 * (ETH + IP4 + UDP + 50))
    out, err = p.communicate(timeout=30)
    return subprocess.CompletedProcess(p.args, p.returncode, out, first + err), want


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("mode", [m[0] for m in CAP_MODES])
def test_the_granted_capabilities_are_enough_and_each_is_needed(objects, netns_v4only, mode, user):
    """With exactly the DaemonSet's capabilities the CLI counts traffic, in
    every mode and both tc attach paths, as uid 0 and as user nobody;
    without any one of them it says so in one line and exits 77."""
    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    ns, cg = netns_v4only, TestCgroup()
    try:
        caps = container(objects)["securityContext"]["capabilities"]["add"]
        p, (key, counts) = _run_with_caps(ns, cg, mode, user, caps, send=True)
        assert p.returncode == 0, p.stderr
        flows = {
            (f["srcIp"], f["dstIp"], f["srcPort"], f["dstPort"], f["direction"]): (f["packets"], f["bytes"])
            for f in json.loads(p.stdout)["flows"]
        }
        assert flows[key] == counts
        for missing in caps:
            p, _ = _run_with_caps(ns, cg, mode, user, [c for c in caps if c != missing], send=False)
            assert (p.returncode, p.stdout) == (77, ""), (missing, p.stderr)
            assert p.stderr == (
                "pktstat-bpf: error: cannot load the BPF programs: permission denied; "
                "run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON\n"
            ), missing
    finally:
        cg.destroy()


# -- pod deletion: what a killed pod left, the next pod removes ----------------------------------


def _tc_prog_ids(ns) -> set[int]:
    s = ns.tc_state()
    return {int(w.split()[0]) for k in ("ingress", "egress") for w in s[k].split(" id ")[1:]}


def test_the_next_pod_removes_what_a_killed_pod_left(objects, netns_v4only):
    """A pod killed whole (deleted with no grace, OOM-killed) on a node
    before Linux 6.6, where TC mode attaches legacy tc filters (modelled with
    the test knob that hides TCX): the container's command, as uid 0 with only
    its capabilities, in a cgroup of its own that is killed (collector and
    janitor together). Its filters stay; the next pod's start removes them,
    and that pod's SIGTERM leaves nothing."""
    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    ns = netns_v4only
    c = container(objects)
    argv = [expand(a, {"POD_IP": ns.A4}) for a in c["args"]]
    bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in c["securityContext"]["capabilities"]["add"])])
    cmd = [
        "ip",
        "netns",
        "exec",
        ns.ns_a,
        "setpriv",
        f"--bounding-set={bounding}",
        "--inh-caps=-all",
        sys.executable,
        "-m",
        "pktstat_bpf",
        *argv,
    ]
    env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": "missing=tcx"}
    before = ns.tc_state()
    cg = TestCgroup()
    try:
        pod = cg.child("pod1")
        p = cg.spawn(pod, *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert " via tc-legacy " in p.stderr.readline()
        ids = held(p.pid)
        first = _tc_prog_ids(ns)
        assert len(first) == 2 and first <= ids["prog"]
        Path(pod, "cgroup.kill").write_text("1")
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert wait_for(lambda: Path(pod, "cgroup.procs").read_text() == "", timeout=10)
        assert _tc_prog_ids(ns) == first  # left behind
        nxt = cg.spawn(cg.child("pod2"), *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert nxt.stderr.readline() == (
            "pktstat-bpf: removed what 1 legacy tc attachment(s) of pktstat-bpf runs that died left behind\n"
        )
        assert " via tc-legacy " in nxt.stderr.readline()
        assert wait_for(lambda: nothing_alive(ids), timeout=10), still_alive(ids)
        second = _tc_prog_ids(ns)
        assert len(second) == 2 and not second & first
        nxt.send_signal(signal.SIGTERM)  # the kubelet's graceful stop
        assert (nxt.wait(timeout=30), nxt.stderr.read()) == (0, "")
        assert wait_for(lambda: ns.tc_state() == before, timeout=10), ns.tc_state()
    finally:
        cg.destroy()
