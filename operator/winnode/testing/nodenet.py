"""Node addresses kube-apiserver will connect to: a network namespace of the test world's own.

kube-apiserver reaches a kubelet (`kubectl logs`, `nodes/<n>/proxy/logs/`) only at a global unicast
address: pkg/registry/core/node/strategy.go ResourceLocation calls proxyutil.IsProxyableHostname
(k8s.io/apimachinery/pkg/util/proxy, v1.37.2), which refuses loopback. Emulated hosts listen for WinRM
on loopback, so their kubelets need a second address, as a host with a management NIC and a node NIC
has. The addresses live in a network namespace made here, joined to ours by a veth pair: traffic to
them never leaves the machine and never touches an interface of the machine's own.

The addresses come from 198.18.0.0/15 (RFC 2544, for network benchmarking: never routed, global
unicast to Go's net.IP.IsGlobalUnicast). Creating a namespace needs CAP_NET_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"
_POOL = ipaddress.IPv4Network("198.18.0.0/15")
_COMMAND_TIMEOUT_S = 10.0
_FIRST_HOST = 10


class NodeNetworkUnavailable(RuntimeError):
    """This machine cannot make the namespace (not root, or no `ip`)."""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NodeNetwork:
    """A namespace holding node addresses from one /24 of 198.18.0.0/15; `listen` binds inside it."""

    def __init__(self) -> None:
        self.name = f"winnode-{secrets.token_hex(3)}"
        suffix = self.name.removeprefix("winnode-")
        self._outer, self._inner = f"wno{suffix}", f"wni{suffix}"
        self.subnet: ipaddress.IPv4Network | None = None
        self._next = _FIRST_HOST
        self._lock = threading.Lock()
        self._up = False

    @staticmethod
    def available() -> str | None:
        """Why a namespace cannot be made here; None when it can."""
        if os.geteuid() != 0:
            return "making a network namespace needs root (CAP_NET_ADMIN)"
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is missing"
        return None

    def _ip(self, *args: str) -> None:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise NodeNetworkUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """A /24 of the pool that no interface of this machine uses (another world may hold one)."""
        shown = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S
        ).stdout
        candidates = list(_POOL.subnets(new_prefix=24))
        start = secrets.randbelow(len(candidates))
        for net in candidates[start:] + candidates[:start]:
            if f" {net.network_address + 1}/" not in shown:
                return net
        raise NodeNetworkUnavailable("every /24 of 198.18.0.0/15 is in use on this machine")

    def start(self) -> NodeNetwork:
        why = self.available()
        if why is not None:
            raise NodeNetworkUnavailable(why)
        self.subnet = self._free_subnet()
        gateway = f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}"
        try:
            self._ip("netns", "add", self.name)
            self._up = True
            self._ip(
                "link", "add", self._outer, "type", "veth", "peer", "name", self._inner, "netns", self.name
            )
            self._ip("addr", "add", gateway, "dev", self._outer)
            self._ip("link", "set", self._outer, "up")
            self._ip("-n", self.name, "link", "set", "lo", "up")
            self._ip("-n", self.name, "link", "set", self._inner, "up")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if not self._up:
            return
        self._up = False
        # Deleting the namespace deletes its end of the pair, and with it ours.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=_COMMAND_TIMEOUT_S)
        subprocess.run(["ip", "link", "del", self._outer], capture_output=True, timeout=_COMMAND_TIMEOUT_S)

    def __enter__(self) -> NodeNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def allocate(self) -> str:
        """A new node address, assigned inside the namespace."""
        if self.subnet is None:
            raise RuntimeError("NodeNetwork is not started")
        with self._lock:
            if self._next >= self.subnet.num_addresses - 1:
                raise NodeNetworkUnavailable(f"{self.subnet} has no address left")
            address = str(self.subnet.network_address + self._next)
            self._next += 1
        self._ip("-n", self.name, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", self._inner)
        return address

    def holds(self, address: str) -> bool:
        return self.subnet is not None and ipaddress.IPv4Address(address) in self.subnet

    def listen(self, address: str, port: int) -> socket.socket:
        """A TCP socket listening on address:port inside the namespace (usable from any thread)."""
        return self._inside(lambda: _listening(address, port))

    def _inside(self, make: Callable[[], socket.socket]) -> socket.socket:
        # setns moves only the calling thread: a short-lived thread enters, makes the socket, and ends.
        # A socket keeps the namespace it was made in.
        result: list[socket.socket] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with open(os.path.join(_NETNS_DIR, self.name), "rb") as ns:
                    _setns(ns.fileno())
                result.append(make())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join(_COMMAND_TIMEOUT_S)
        if failure:
            raise failure[0]
        if not result:
            raise TimeoutError(f"binding in network namespace {self.name} did not finish")
        return result[0]


def _listening(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
