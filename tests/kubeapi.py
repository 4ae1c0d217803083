"""A small stand-in for the Kubernetes API server: serves the recorded pod
list of tests/data/kube_pods.json on GET /api/v1/pods and a watch stream
(chunked JSON lines, as the API server sends them) on ?watch=true. The test
adds, changes and deletes pods while clients watch; expire() makes every
older resourceVersion answer with an ERROR 410 Gone event."""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

DATA = json.loads((Path(__file__).parent / "data" / "kube_pods.json").read_text())


class FakeKubeAPI:
    def __init__(self, pods: list[dict] | None = None) -> None:
        rec = copy.deepcopy(DATA["list"])
        self.rv = int(rec["metadata"]["resourceVersion"])
        self.pods: dict[str, dict] = {}
        for p in rec["items"] if pods is None else pods:
            self.pods[self._key(p)] = p
        self.log: list[tuple[int, str, dict]] = []  # (resourceVersion, type, object)
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.requests: list[tuple[str, dict]] = []
        self.cond = threading.Condition()
        self.closing = False
        self.server: ThreadingHTTPServer | None = None

    @staticmethod
    def _key(p: dict) -> str:
        return f"{p['metadata']['namespace']}/{p['metadata']['name']}"

    # -- what the test does -------------------------------------------------------
    def _event(self, kind: str, pod: dict) -> dict:
        with self.cond:
            self.rv += 1
            pod = copy.deepcopy(pod)
            pod["metadata"]["resourceVersion"] = str(self.rv)
            if kind == "DELETED":
                self.pods.pop(self._key(pod), None)
            else:
                self.pods[self._key(pod)] = pod
            self.log.append((self.rv, kind, pod))
            self.cond.notify_all()
            return pod

    def add(self, pod: dict) -> dict:
        return self._event("ADDED", pod)

    def modify(self, pod: dict) -> dict:
        return self._event("MODIFIED", pod)

    def delete(self, pod: dict) -> dict:
        return self._event("DELETED", pod)

    def expire(self) -> None:
        """Compact history: open and future watches from an older version get 410."""
        with self.cond:
            self.rv += 1
            self.compacted = self.rv
            self.cond.notify_all()

    def count(self, watch: bool) -> int:
        return sum(1 for _, q in self.requests if (q.get("watch", [""])[0].lower() == "true") == watch)

    # -- server -------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1") -> FakeKubeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                u = urlparse(self.path)
                q = parse_qs(u.query)
                api.requests.append((u.path, q))
                if u.path != "/api/v1/pods":
                    return self._json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                if q.get("watch", [""])[0].lower() == "true":
                    return self._watch(
                        int(q.get("resourceVersion", ["0"])[0] or 0),
                        float(q.get("timeoutSeconds", ["300"])[0]),
                    )
                with api.cond:
                    doc = {
                        "kind": "PodList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(api.rv)},
                        "items": list(api.pods.values()),
                    }
                self._json(200, doc)

            def _json(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _chunk(self, doc) -> None:
                line = json.dumps(doc).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()

            def _watch(self, since: int, timeout: float):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + min(timeout, 30)
                sent = since
                try:
                    while time.monotonic() < deadline:
                        with api.cond:
                            if api.closing:
                                break
                            if sent < api.compacted:
                                gone = {
                                    "type": "ERROR",
                                    "object": {
                                        "kind": "Status",
                                        "apiVersion": "v1",
                                        "status": "Failure",
                                        "code": 410,
                                        "reason": "Expired",
                                        "message": f"too old resource version: {sent} ({api.compacted})",
                                    },
                                }
                                self._chunk(gone)
                                break
                            todo = [(rv, k, o) for rv, k, o in api.log if rv > sent]
                            if not todo:
                                api.cond.wait(0.1)
                                continue
                        for rv, kind, obj in todo:
                            self._chunk({"type": kind, "object": obj})
                            sent = rv
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n"
            "users:\n- name: test\n  user:\n    token: not-a-secret\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
        )
        return path

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
