"""Kubernetes pod names for flow addresses (``--kubeconfig``).

A :class:`PodCache` lists every pod once and then follows the API server's
watch stream (list + watch, as an informer does), keeping a map from pod IP
to ``namespace/pod`` in memory. Looking up an address is a dict lookup; no API
call is ever made per IP or per flow.

Needs the Kubernetes Python client: ``pip install "pktstat-bpf[kube]"``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from ..core.errors import PktstatError, UsageError

log = logging.getLogger("pktstat_bpf")

#: Server-side timeout of one watch request; the cache re-watches from the
#: last resource version when it ends.
WATCH_SECONDS = 300
#: Seconds between attempts when the API server cannot be reached.
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)


def _client() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        import kubernetes  # noqa: F401
        from kubernetes import client, config, watch
    except ImportError:
        raise PktstatError(
            "--kubeconfig needs the Kubernetes Python client: pip install 'pktstat-bpf[kube]'"
        ) from None
    return client, config, watch


def _norm(ip: str) -> str | None:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    """The addresses a pod (a raw API object) owns: ``status.podIPs`` (or
    ``podIP``), none for host-network pods (their IP is the node's) or pods
    that have finished (their IP may already belong to another pod)."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return []
    ips = [p.get("ip", "") for p in status.get("podIPs") or []] or [status.get("podIP") or ""]
    return [n for n in (_norm(ip) for ip in ips if ip) if n]


def pod_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class PodCache:
    """Pod IP -> ``namespace/pod``, kept current by a watch.

    >>> pods = PodCache("~/.kube/config").start()      # doctest: +SKIP
    >>> pods.lookup("10.244.1.7")                      # doctest: +SKIP
    'default/web-5d9c7b7f6-abcde'
    >>> pods.stop()                                    # doctest: +SKIP

    ``start()`` lists the pods synchronously (so lookups are right from the
    first flow; an unreachable API server is an error there) and then watches
    in a daemon thread. A watch that ends is resumed from the last resource
    version; one that expired (HTTP 410 Gone) is replaced by a fresh list.
    The cache is the cluster's current state: a deleted pod's address is
    unknown again until another pod takes it.
    """

    def __init__(self, kubeconfig: str, *, context: str | None = None, timeout: float = 10.0) -> None:
        path = os.path.expanduser(kubeconfig)
        if os.path.isdir(path):
            raise UsageError(f"--kubeconfig: {kubeconfig!r} is a directory, not a kubeconfig file")
        if not os.path.exists(path):
            raise UsageError(f"--kubeconfig: no such file: {kubeconfig!r}")
        if not os.path.isfile(path):  # a device (/dev/zero), a fifo, a socket: never a kubeconfig
            raise UsageError(f"--kubeconfig: {kubeconfig!r} is not a regular file, so not a kubeconfig file")
        client, config, watch = _client()
        try:
            self._api = config.new_client_from_config(config_file=path, context=context)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--kubeconfig: cannot use {kubeconfig!r}: {first}") from None
        self._core = client.CoreV1Api(self._api)
        self._watch_mod = watch
        self._api_exception = client.exceptions.ApiException
        self.server = self._api.configuration.host
        self.timeout = timeout
        self._lock = threading.Lock()
        self._by_ip: dict[str, str] = {}
        self._by_pod: dict[str, list[str]] = {}
        self._rv = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        #: Number of list and watch events applied so far (for tests and -v).
        self.events = 0
        self.relists = 0

    # -- cache ----------------------------------------------------------------
    @staticmethod
    def _put(by_ip: dict[str, str], by_pod: dict[str, list[str]], name: str, ips: list[str]) -> None:
        """Give pod `name` the addresses `ips` (none: forget it) in the maps."""
        for ip in by_pod.pop(name, []):
            if by_ip.get(ip) == name:
                del by_ip[ip]
        if ips:
            by_pod[name] = ips
            for ip in ips:
                by_ip[ip] = name

    def _apply(self, kind: str, pod: Mapping[str, Any]) -> None:
        name = pod_name(pod)
        ips = [] if kind == "DELETED" else pod_ips(pod)
        with self._lock:
            self._put(self._by_ip, self._by_pod, name, ips)
            self.events += 1

    def _replace(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Make the cache exactly `pods` (a fresh list). The new maps are
        built aside and swapped in at once, so a lookup during a relist sees
        either the old cache or the new one, never an empty or partial one."""
        by_ip: dict[str, str] = {}
        by_pod: dict[str, list[str]] = {}
        n = 0
        for p in pods:
            self._put(by_ip, by_pod, pod_name(p), pod_ips(p))
            n += 1
        with self._lock:
            self._by_ip, self._by_pod = by_ip, by_pod
            self.events += n

    def lookup(self, ip: str) -> str | None:
        """``namespace/pod`` of the pod that has address `ip`, or None."""
        return self._by_ip.get(ip)  # one read of the current map: relists swap it whole

    def label(self, ips: np.ndarray) -> np.ndarray:
        """:meth:`lookup` over an array of address strings (each distinct
        address looked up once); None where no pod has the address."""
        if len(ips) == 0:
            return np.empty(0, dtype=object)
        uniq, inverse = np.unique(ips.astype(str), return_inverse=True)
        with self._lock:
            names = np.array([self._by_ip.get(u) for u in uniq] + [None], dtype=object)[:-1]
        return names[inverse.reshape(len(ips))]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_pod)

    def snapshot(self) -> dict[str, str]:
        """A copy of the IP -> pod map."""
        with self._lock:
            return dict(self._by_ip)

    # -- list + watch ---------------------------------------------------------
    def _list(self) -> None:
        resp = self._core.list_pod_for_all_namespaces(_preload_content=False, _request_timeout=self.timeout)
        try:
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        self._replace(doc.get("items") or [])
        self._rv = (doc.get("metadata") or {}).get("resourceVersion", "")
        log.debug("kubernetes: %d pods listed from %s (resourceVersion %s)", len(self), self.server, self._rv)

    def start(self) -> PodCache:
        try:
            self._list()
        except self._api_exception as e:
            raise PktstatError(f"cannot list pods from {self.server}: HTTP {e.status} {e.reason}") from None
        except Exception as e:
            raise PktstatError(f"cannot list pods from {self.server}: {_reason(e)}") from None
        self._thread = threading.Thread(target=self._run, name="pktstat-kube-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()

    def __enter__(self) -> PodCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch_once(self) -> None:
        w = self._watch = self._watch_mod.Watch()
        for ev in w.stream(
            self._core.list_pod_for_all_namespaces,
            resource_version=self._rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(self.timeout, WATCH_SECONDS + 30),
        ):
            if self._stop.is_set():
                return
            raw = ev.get("raw_object") or {}
            rv = (raw.get("metadata") or {}).get("resourceVersion")
            if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(ev["type"], raw)
            if rv:
                self._rv = rv

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._watch_once()
                failures = 0
            except self._api_exception as e:
                if e.status == 410:  # our resource version expired: start over
                    log.debug("kubernetes: watch expired (410 Gone), listing again")
                    failures = 0
                    if not self._relist():
                        failures += 1
                    continue
                log.warning("kubernetes: watching pods failed: HTTP %s %s", e.status, e.reason)
                failures += 1
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("kubernetes: watching pods failed: %s", _reason(e))
                failures += 1
            if failures:
                self._stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])
                if failures > 1 and not self._relist():
                    continue

    def _relist(self) -> bool:
        try:
            self._list()
            self.relists += 1
            return True
        except Exception as e:
            log.warning("kubernetes: listing pods failed: %s", _reason(e))
            return False


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None)
    text = str(r if r is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__
