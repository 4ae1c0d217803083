"""The exporter's HTTP server: ``/metrics`` of a prometheus-client registry
(prometheus-client's own WSGI app), ``/healthz`` and a landing page, one
thread per request, on an address parsed from ``--prometheus``."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from ..core.errors import PktstatError, PrivilegeError, UsageError
from .metrics import prometheus_client_module

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import FlowMetrics

log = logging.getLogger("pktstat_bpf")

#: Seconds a connection to the metrics server may stay silent before it is dropped.
REQUEST_TIMEOUT = 30.0


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``:PORT`` -> (host, port).
    A missing address means 127.0.0.1: flow metadata is not published
    beyond this host unless asked for (``0.0.0.0:PORT``, ``[::]:PORT``).
    Port 0 picks a free port (the log line names it)."""
    t = text.strip()
    usage = "expected ADDR:PORT or PORT, e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100"
    if not t:
        raise UsageError(f"--prometheus: empty address ({usage})")
    if t.startswith("["):
        host, sep, port = t[1:].partition("]:")
        if not sep:
            raise UsageError(f"--prometheus: invalid address {text!r} ({usage})")
    elif t.count(":") > 1:
        raise UsageError(f"--prometheus: invalid address {text!r}: bracket an IPv6 address, e.g. [::1]:9100")
    elif ":" in t:
        host, port = t.split(":")
    elif t.isdigit():
        host, port = "", t
    else:
        raise UsageError(f"--prometheus: invalid address {text!r} ({usage})")
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--prometheus: invalid port {port!r} (expected 0-65535)")
    if not host or host == "localhost":
        host = "127.0.0.1"
    else:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            expected = "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::"
            raise UsageError(f"--prometheus: invalid address {host!r} ({expected})") from None
    return host, int(port)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # a silent client is dropped, its thread freed

    def log_message(self, format: str, *args: Any) -> None:  # the base class's argument names
        pass


def _server_class(family: int) -> type:
    from socketserver import ThreadingMixIn

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a stuck scrape never holds up the exit
        # ... nor does server_close(): ThreadingMixIn joins every request thread
        # there unless this is False (daemon_threads alone does not stop that), and a
        # scraper that keeps its connection open holds its thread for REQUEST_TIMEOUT
        block_on_close = False
        address_family = family
        allow_reuse_address = True

        def server_bind(self) -> None:
            if family == socket.AF_INET6:
                # [::] serves IPv4 too, whatever the sysctl bindv6only says
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def handle_error(self, request: Any, client_address: Any) -> None:
            log.debug("metrics request from %s failed", client_address, exc_info=True)

    return Server


LANDING = b"""<html><head><title>pktstat-bpf exporter</title></head>
<body><h1>pktstat-bpf exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


class MetricsServer:
    """``/metrics`` of a prometheus-client registry over HTTP, one thread
    per request; ``/healthz`` answers 200 ``ok``, or 503 with the reason
    `health()` gives (for liveness probes). The socket is bound in the
    constructor (so a bad or busy address fails before anything is
    attached); :meth:`start` begins serving; :meth:`close` stops
    (idempotent)."""

    def __init__(
        self, host: str, port: int, registry: Any, health: Callable[[], str | None] | None = None
    ) -> None:
        prometheus_client = prometheus_client_module()
        where = format_listen(host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        metrics_app = prometheus_client.make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/":
                start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                return [LANDING]
            if path == "/healthz":
                problem = health() if health is not None else None
                status = "200 OK" if problem is None else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [(problem or "ok").encode() + b"\n"]
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"404 Not Found: metrics are at /metrics\n"]

        try:
            self.httpd = _server_class(family)((host, port), _Handler)
        except OSError as e:
            raise _bind_error(e, where) from None
        self.httpd.set_app(app)
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{format_listen(self.host, self.port)}/metrics"

    def start(self) -> MetricsServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        if self.httpd is not None:
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind_error(e: OSError, where: str) -> PktstatError:
    if e.errno == errno.EADDRINUSE:
        return PktstatError(f"--prometheus: cannot listen on {where}: the address is already in use")
    if e.errno == errno.EADDRNOTAVAIL:
        return UsageError(f"--prometheus: cannot listen on {where}: the address is not on this host")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PrivilegeError(
            f"--prometheus: cannot listen on {where}: permission denied (ports below 1024 need "
            "CAP_NET_BIND_SERVICE)"
        )
    return PktstatError(f"--prometheus: cannot listen on {where}: {e.strerror or e}")


def make_registry(metrics: FlowMetrics) -> Any:
    """A registry with `metrics` and the exporter's own process metrics
    (``process_*``: CPU, memory, file descriptors) and ``python_info``."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
