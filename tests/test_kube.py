"""--kubeconfig: pod names from a list + watch cache, against a local
stand-in API server (tests/kubeapi.py) serving recorded responses."""

from __future__ import annotations

import copy
import json
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from kubeapi import DATA, FakeKubeAPI
from netns import NetnsPair, wait_for
from traffic import ETH, IP4, UDP

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (pip install '.[kube]')")

from pktstat_bpf.core.errors import PktstatError, UsageError
from pktstat_bpf.views.kube import PodCache, pod_ips

API_POD = DATA["api_pod"]


@pytest.fixture
def api(tmp_path):
    a = FakeKubeAPI().start()
    a.config = a.kubeconfig(tmp_path / "kubeconfig")
    yield a
    a.stop()


def test_pod_ips_skip_host_network_and_finished_pods():
    web, proxy, job = DATA["list"]["items"]
    assert pod_ips(web) == ["10.244.0.5", "fd00:244::5"]
    assert pod_ips(proxy) == [] and pod_ips(job) == []
    assert pod_ips(API_POD) == ["10.99.0.2", "fd99::2"]  # normalised as flows print them


def test_cache_lists_then_follows_the_watch(api):
    with PodCache(str(api.config)) as pods:
        assert pods.snapshot() == {"10.244.0.5": "shop/web-0", "fd00:244::5": "shop/web-0"}
        assert pods.lookup("10.99.0.1") is None  # host-network pod: the node's address
        api.add(API_POD)
        assert wait_for(lambda: pods.lookup("10.99.0.2") == "shop/api-7d9f8b6c5-q2wlx")
        assert pods.lookup("fd99::2") == "shop/api-7d9f8b6c5-q2wlx"
        moved = copy.deepcopy(API_POD)
        moved["status"]["podIP"], moved["status"]["podIPs"] = "10.99.0.3", [{"ip": "10.99.0.3"}]
        api.modify(moved)
        assert wait_for(lambda: pods.lookup("10.99.0.3") is not None)
        assert pods.lookup("10.99.0.2") is None and pods.lookup("fd99::2") is None
        api.delete(moved)
        assert wait_for(lambda: pods.lookup("10.99.0.3") is None)
        ips = np.array(["10.244.0.5", "8.8.8.8", "10.244.0.5", "fd00:244::5"], dtype=object)
        assert list(pods.label(ips)) == ["shop/web-0", None, "shop/web-0", "shop/web-0"]
        assert len(pods) == 1
    assert api.count(watch=False) == 1  # one list; everything else came from the watch
    assert api.count(watch=True) >= 1


def test_cache_relists_when_the_watch_expires(api):
    with PodCache(str(api.config)) as pods:
        assert wait_for(lambda: api.count(watch=True) == 1)
        # history is compacted and the pod appears in the list only
        api.expire()
        with api.cond:
            api.pods["shop/api-7d9f8b6c5-q2wlx"] = copy.deepcopy(API_POD)
        assert wait_for(lambda: pods.lookup("10.99.0.2") == "shop/api-7d9f8b6c5-q2wlx")
        assert pods.relists == 1 and api.count(watch=False) == 2
        api.delete(API_POD)  # and the new watch goes on from the new list
        assert wait_for(lambda: pods.lookup("10.99.0.2") is None)


def running_pod(name: str, *ips: str) -> dict:
    ns, pod = name.split("/")
    status = {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
    return {"metadata": {"namespace": ns, "name": pod}, "spec": {}, "status": status}


def test_relist_swaps_the_cache_whole(api):
    web, api_pod = DATA["list"]["items"][0], API_POD
    kept = {
        "10.244.0.5": "shop/web-0",
        "fd00:244::5": "shop/web-0",
        "10.99.0.2": "shop/api-7d9f8b6c5-q2wlx",
        "fd99::2": "shop/api-7d9f8b6c5-q2wlx",
    }
    pods = PodCache(str(api.config))  # not started: the test drives the lists itself
    pods._replace([running_pod("shop/old-0", "10.244.0.9"), web, api_pod])
    before = pods.snapshot()
    assert before == {**kept, "10.244.0.9": "shop/old-0"}
    seen = []

    def relist():
        # the new list, read pod by pod as _list would; between any two pods
        # a lookup must see the whole old cache (the pods in both lists last,
        # so a cache cleared or filled in place would miss them)
        for p in (running_pod("shop/new-0", "10.244.0.10"), api_pod, web):
            addrs = np.array(list(kept), dtype=object)
            seen.append(list(pods.label(addrs)))
            assert [pods.lookup(a) for a in kept] == list(kept.values())
            assert pods.snapshot() == before and len(pods) == 3
            yield p

    pods._replace(relist())
    assert seen == [list(kept.values())] * 3
    assert pods.snapshot() == {**kept, "10.244.0.10": "shop/new-0"}
    assert pods.lookup("10.244.0.9") is None and len(pods) == 3 and pods.events == 6


def test_lookups_during_relists_never_miss_a_pod_that_stays(api):
    stay = [running_pod(f"shop/stay-{i}", f"10.245.{i // 200}.{i % 200 + 1}") for i in range(400)]
    lists = (
        [running_pod(f"shop/a-{i}", f"10.246.0.{i + 1}") for i in range(100)] + stay,
        [running_pod(f"shop/b-{i}", f"10.247.0.{i + 1}") for i in range(100)] + stay,
    )
    addrs = np.array([p["status"]["podIP"] for p in stay[::7]], dtype=object)
    pods = PodCache(str(api.config))
    pods._replace(lists[0])
    done = threading.Event()
    misses, reads = [], [0]

    def reader():
        while not done.is_set():
            got = pods.label(addrs)
            if any(n is None for n in got) or pods.lookup(addrs[-1]) is None:
                misses.append(got)
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(100):
            pods._replace(lists[i % 2])
    finally:
        done.set()
        t.join()
    assert reads[0] > 0 and not misses
    assert len(pods) == 500


def test_unreachable_api_server_is_a_one_line_error(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        "users:\n- name: t\n  user: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n"
    )
    with pytest.raises(PktstatError) as e:
        PodCache(str(cfg), timeout=2).start()
    assert str(e.value).startswith(f"cannot list pods from http://127.0.0.1:{port}: ")
    assert "\n" not in str(e.value)


def test_bad_kubeconfig_is_a_usage_error(tmp_path):
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(UsageError) as e:
        PodCache(str(cfg))
    assert str(e.value).startswith(f"--kubeconfig: cannot use '{cfg}': ")
    r = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "-i", "lo", "--kubeconfig", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.startswith(
        f"pktstat-bpf: error: --kubeconfig: cannot use '{cfg}': "
    )
    assert len(r.stderr.splitlines()) == 1


def test_jsonl_names_pods_that_come_and_go_during_the_capture(netns: NetnsPair, tmp_path):
    # The API server listens inside namespace A, where the CLI runs.
    with netns.in_a():
        api = FakeKubeAPI().start()
    cfg = api.kubeconfig(tmp_path / "kubeconfig")
    peer = netns.peer("udp", "5301")
    lines: list[dict] = []
    stop = threading.Event()
    sport = []

    def traffic():
        with netns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(300):  # bounded: at most 300 packets, ~15 s
                if stop.wait(0.05):
                    break
                s.sendto(b"k" * 20, (netns.B4, 5301))
                sport[:] = [s.getsockname()[1]]

    p = netns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "--jsonl",
        "-r",
        "200ms",
        "-t",
        "0",
        "--kubeconfig",
        str(cfg),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def reader():
        for line in p.stdout:
            lines.append(json.loads(line))

    rt = threading.Thread(target=reader)
    rt.start()
    t = threading.Thread(target=traffic)
    try:
        assert "counting on va via tcx" in p.stderr.readline()
        t.start()

        def mine(since: int):
            return [
                d
                for d in lines[since:]
                if sport and d["srcPort"] == sport[0] and d["dstPort"] == 5301 and d["packets"] > 0
            ]

        assert wait_for(lambda: mine(0), timeout=10)
        assert "dstPod" not in mine(0)[0]
        api.add(API_POD)
        assert wait_for(
            lambda: any(d.get("dstPod") == "shop/api-7d9f8b6c5-q2wlx" for d in mine(0)), timeout=10
        )
        api.delete(API_POD)
        mark = len(lines)
        assert wait_for(lambda: any(d.get("dstPod") is None for d in mine(mark)), timeout=10)
        # once the deletion is seen, no later line names the pod again
        first_gone = next(
            i for i, d in enumerate(lines) if i >= mark and d in mine(mark) and "dstPod" not in d
        )
        assert not [d for d in mine(first_gone) if "dstPod" in d]
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)
        rt.join(timeout=20)
        err = p.stderr.read()
        api.stop()
        peer.kill()
    assert p.returncode == 0, err
    assert not any("srcPod" in d for d in lines)  # 10.99.0.1 belongs to a host-network pod only
    assert all(d["bytes"] == d["packets"] * (ETH + IP4 + UDP + 20) for d in mine_all(lines, sport[0]))
    assert api.count(watch=False) == 1  # one list, no call per IP


def mine_all(lines, sport):
    return [d for d in lines if d["srcPort"] == sport and d["dstPort"] == 5301]


def test_final_report_names_pods(netns: NetnsPair, tmp_path):
    with netns.in_a():
        api = FakeKubeAPI(pods=DATA["list"]["items"] + [API_POD]).start()
    cfg = api.kubeconfig(tmp_path / "kubeconfig")
    peer = netns.peer("udp", "5302")
    try:
        p = netns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "-t",
            "1500ms",
            "--kubeconfig",
            str(cfg),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "counting on va via tcx" in p.stderr.readline()
        with netns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"r" * 30, (netns.B4, 5302))
            sp = s.getsockname()[1]
        out, err = p.communicate(timeout=20)
    finally:
        api.stop()
        peer.kill()
    assert p.returncode == 0, err
    want = (  # "app: ?" once 3 payload packets in one interval matched nothing
        f"packets: 3, bytes: {3 * (ETH + IP4 + UDP + 30)}, proto: UDP, src: {netns.A4}:{sp}, "
        f"dst: {netns.B4}:5302 (shop/api-7d9f8b6c5-q2wlx)"
    )
    lines = [line.replace(", app: ?, ", ", ") for line in out.splitlines()]
    assert any(line.endswith(want) for line in lines), out
