"""Fake Windows binaries and a tiny local HTTP file server, so hosts can "download" artifacts in tests.

A fake binary is recognisable by its first line, `WINNODE-FAKE-BINARY name=<name> version=<version>`,
followed by deterministic padding (same name and version -> same bytes -> same sha256). The emulated
host reads that line to learn which version of kubelet.exe it is "running".
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

log = logging.getLogger(__name__)

FAKE_BINARY_MAGIC = b"WINNODE-FAKE-BINARY"
_FAKE_LINE = re.compile(rb"^WINNODE-FAKE-BINARY name=(\S+) version=(\S+)\n")
DEFAULT_FAKE_BINARY_SIZE = 4096

# The Windows node binaries of a Kubernetes release, as dl.k8s.io lays them out (kube-log-runner is one of
# the node targets, hack/lib/golang.sh kube::golang::node_targets at v1.37.2).
KUBERNETES_NODE_BINARIES = (
    "kubelet.exe",
    "kube-proxy.exe",
    "kube-log-runner.exe",
    "kubeadm.exe",
    "kubectl.exe",
)


def _padding(seed: bytes, size: int) -> Iterator[bytes]:
    counter = 0
    produced = 0
    while produced < size:
        block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        yield block[: size - produced]
        produced += len(block)
        counter += 1


def fake_binary(name: str, version: str, *, size: int = DEFAULT_FAKE_BINARY_SIZE) -> bytes:
    """Deterministic stand-in for a Windows executable; `size` is the total length (at least the header)."""
    if not name or not version or any(c.isspace() for c in name + version):
        raise ValueError(
            f"fake binary name and version must be non-empty without spaces: {name!r} {version!r}"
        )
    header = b"%s name=%s version=%s\n" % (FAKE_BINARY_MAGIC, name.encode(), version.encode())
    return header + b"".join(_padding(header, max(0, size - len(header))))


@dataclass(frozen=True)
class FakeBinaryInfo:
    name: str
    version: str


def parse_fake_binary(content: bytes) -> FakeBinaryInfo | None:
    """The name and version written by `fake_binary`, or None for anything else."""
    match = _FAKE_LINE.match(content[:512])
    if not match:
        return None
    return FakeBinaryInfo(name=match.group(1).decode(), version=match.group(2).decode())


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def kubernetes_node_binaries(version: str, *, size: int = DEFAULT_FAKE_BINARY_SIZE) -> dict[str, bytes]:
    """Fake Windows node binaries of one release, keyed by their dl.k8s.io path (`/v1.37.2/bin/windows/amd64/kubelet.exe`)."""
    return {
        f"/{version}/bin/windows/amd64/{exe}": fake_binary(exe.removesuffix(".exe"), version, size=size)
        for exe in KUBERNETES_NODE_BINARIES
    }


def kubernetes_release(version: str, *, size: int = DEFAULT_FAKE_BINARY_SIZE) -> dict[str, bytes]:
    """The node binaries of one release with their published `<file>.sha256` beside each, as a mirror
    of dl.k8s.io serves them (what the operator reads checksums from)."""
    files = kubernetes_node_binaries(version, size=size)
    files.update({f"{p}.sha256": (sha256_hex(c) + "\n").encode() for p, c in list(files.items())})
    return files


def cni_plugins_release(
    version: str | None = None, *, size: int = DEFAULT_FAKE_BINARY_SIZE
) -> dict[str, bytes]:
    """The Windows CNI plugins of a containernetworking/plugins release (default: the pinned one), as
    the artifact mirror serves them (winnode.network.cni_plugins): one file per plugin, each with its
    `<file>.sha256`."""
    from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION, cni_plugin_url

    version = version or CNI_PLUGINS_VERSION
    files = {
        cni_plugin_url("", version, exe): fake_binary(exe.removesuffix(".exe"), version, size=size)
        for exe in CNI_PLUGINS
    }
    files.update({f"{p}.sha256": (sha256_hex(c) + "\n").encode() for p, c in list(files.items())})
    return files


@dataclass(frozen=True)
class ServedRequest:
    at: float
    method: str
    path: str
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: _ArtifactHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "winnode-artifacts/1"

    def _serve(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        content = owner.get(path)
        status = 200 if content is not None else 404
        owner._record(ServedRequest(at=time.time(), method=self.command, path=path, status=status))
        payload = content if content is not None else b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if content is not None else "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: object) -> None:
        # Test output stays quiet; requests are recorded on the server instead.
        return


class _ArtifactHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: ArtifactServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr for any handler error; a client that went away
        # mid-download (a host's Invoke-WebRequest cancelled by a timeout) is not one worth reading.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("artifact client %s went away: %s", client_address, exc)
            return
        log.warning("artifact request from %s failed: %r", client_address, exc)


class ArtifactServer:
    """Serves a dict of path -> bytes over HTTP on 127.0.0.1 (ephemeral port) from a background thread.

    >>> with ArtifactServer({"/kubelet.exe": fake_binary("kubelet", "v1.37.2")}) as srv:
    ...     url = srv.url + "/kubelet.exe"
    """

    STOP_TIMEOUT_S: ClassVar[float] = 5.0

    def __init__(self, files: Mapping[str, bytes] | None = None, *, host: str = "127.0.0.1") -> None:
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._requests: list[ServedRequest] = []
        self._host = host
        self._httpd: _ArtifactHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for path, content in (files or {}).items():
            self.add(path, content)

    @staticmethod
    def _normalize(path: str) -> str:
        return path if path.startswith("/") else "/" + path

    def add(self, path: str, content: bytes) -> str:
        """Serve `content` at `path`; returns its full URL once started (else the path)."""
        key = self._normalize(path)
        with self._lock:
            self._files[key] = content
        return self.url + key if self._httpd else key

    def publish_release(self, version: str) -> None:
        """Serve the fake node binaries of `version` and their checksums (kubernetes_release)."""
        for path, content in kubernetes_release(version).items():
            self.add(path, content)

    def publish_cni_plugins(self, version: str | None = None) -> None:
        """Serve the fake Windows CNI plugins of `version` (default: the pinned one) and their checksums."""
        for path, content in cni_plugins_release(version).items():
            self.add(path, content)

    def remove(self, path: str) -> None:
        with self._lock:
            self._files.pop(self._normalize(path), None)

    def get(self, path: str) -> bytes | None:
        with self._lock:
            return self._files.get(self._normalize(path))

    def _record(self, request: ServedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[ServedRequest]:
        with self._lock:
            return list(self._requests)

    def downloads(self, path: str) -> int:
        """How many GETs of `path` were answered with its content."""
        key = self._normalize(path)
        return sum(1 for r in self.requests if r.path == key and r.method == "GET" and r.status == 200)

    @property
    def url(self) -> str:
        if not self._httpd:
            raise RuntimeError("ArtifactServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url_for(self, path: str) -> str:
        return self.url + self._normalize(path)

    def start(self) -> ArtifactServer:
        if self._httpd:
            return self
        httpd = _ArtifactHTTPServer((self._host, 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="winnode-artifacts", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd:
            httpd.shutdown()
            httpd.server_close()
        if thread:
            thread.join(self.STOP_TIMEOUT_S)

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
