"""Emulated hosts whose clock differs from this machine's: `winnode emulator` run under libfaketime.

Kerberos is the one protocol here that judges time: the host's acceptor refuses a ticket whose end
time it has passed (KRB_AP_ERR_TKT_EXPIRED) or an authenticator more than the allowed skew away from
its own clock (KRB_AP_ERR_SKEW). To have the host itself judge it, with the operator and the KDC on
real time, the emulator runs in a child process whose clock libfaketime moves (LD_PRELOAD of Debian's
libfaketime, installed by hack/install-krb5.sh); MIT krb5 in that process reads the moved clock
(krb5_timeofday -> time(2)). Only the wall clock moves: monotonic clocks stay real, so the emulator's
timeouts behave as usual.
"""

from __future__ import annotations

import glob
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# Debian's libfaketime: /usr/lib/<multiarch>/faketime/; the MT build, since the emulator runs threads.
FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketimeMT.so.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# How far the probe's clock may be from the asked offset (process start, scheduling).
OFFSET_TOLERANCE_S = 60.0


def faketime_library() -> str | None:
    found = sorted(glob.glob(FAKETIME_GLOB))
    return found[0] if found else None


def faketime_env(offset_s: int) -> dict[str, str]:
    """Environment that moves a child's wall clock by `offset_s` seconds (negative: behind)."""
    library = faketime_library()
    if library is None:
        raise RuntimeError(f"libfaketime is missing ({FAKETIME_GLOB}): run hack/install-krb5.sh")
    return {
        "LD_PRELOAD": library,
        "FAKETIME": f"{offset_s:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def child_clock_offset(offset_s: int) -> float:
    """The offset a child under faketime_env(offset_s) actually sees, measured (not assumed)."""
    env = {**os.environ, **faketime_env(offset_s)}
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return float(out.strip()) - before


@dataclass(frozen=True)
class SkewedHost:
    hostname: str
    address: str
    port: int
    scheme: str
    credentials_secret_name: str


class SkewedEmulator:
    """One `winnode emulator` host accepting Kerberos with `keytab`, its clock `offset_s` seconds off."""

    def __init__(
        self,
        *,
        offset_s: int,
        keytab: Path,
        principals: tuple[str, ...],
        krb5_conf: Path,
        prefix: str,
        log: Path,
        base_address: str = "127.0.13.1",
    ) -> None:
        self.offset_s = offset_s
        self.keytab = keytab
        self.principals = principals
        self.krb5_conf = krb5_conf
        self.prefix = prefix
        self.log = log
        self.base_address = base_address
        self.host: SkewedHost | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SkewedHost:
        argv = [
            sys.executable, "-m", "winnode", "emulator",
            "--hosts", "1", "--port", "0", "--base-address", self.base_address, "--prefix", self.prefix,
            "--auth", "kerberos", "--kerberos-keytab", str(self.keytab),
            "--duration", str(int(START_TIMEOUT_S * 40)),
        ]  # fmt: skip
        for principal in self.principals:
            argv += ["--kerberos-principal", principal]
        env = {**os.environ, "KRB5_CONFIG": str(self.krb5_conf), **faketime_env(self.offset_s)}
        with self.log.open("w") as log:
            self._process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log)
        assert self._process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        out = b""
        # The table comes first: a header, then one row per host. Raw reads, so that select sees
        # everything the child wrote (no buffer of ours in between).
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while out.count(b"\n") < 2 and (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    break
                chunk = os.read(self._process.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
        lines = out.decode(errors="replace").splitlines()
        if len(lines) < 2 or not lines[0].startswith("HOST"):
            self.stop()
            raise RuntimeError(
                f"winnode emulator under faketime did not start: {out!r} {self.log.read_text()[-2000:]}"
            )
        name, address, port, scheme, _user, secret = lines[1].split()
        self.host = SkewedHost(name, address, int(port), scheme, secret)
        return self.host

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> SkewedHost:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
