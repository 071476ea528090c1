"""A real MIT Kerberos realm on loopback for tests: Debian's krb5-kdc with its database in a temporary directory.

`KerberosRealm.start()` writes kdc.conf and krb5.conf (no DNS: every lookup winnode does must be
named in the file, as an operator's pod gets it from a ConfigMap), creates the database
(`kdb5_util create -s`), and starts `krb5kdc -n` on a free loopback port. Principals and keytabs are
made with `kadmin.local`. Passwords go to kadmin on stdin, never on a command line.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

KDC_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local")
_KADMIN_FAILED = re.compile(r"usage:|error|failed|while |not found|invalid", re.IGNORECASE)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class KDCUnavailable(RuntimeError):
    """The MIT KDC programs are not installed (hack/install-krb5.sh installs them)."""


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def tools_missing() -> list[str]:
    path = _sbin_path()
    return [tool for tool in KDC_TOOLS if shutil.which(tool, path=path) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class KerberosRealm:
    directory: Path
    realm: str = "WINNODE.TEST"
    port: int = 0
    # Longest ticket the KDC issues; tests shorten it to see tickets expire.
    max_life: str = "1h"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.directory / "kdc.conf"

    def env(self) -> dict[str, str]:
        """What a process needs to use this realm (as a client, an acceptor or an admin)."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "PATH": _sbin_path(),
        }

    def _run(self, *argv: str, stdin: str = "") -> str:
        done = subprocess.run(
            argv,
            input=stdin.encode(),
            capture_output=True,
            env={**os.environ, **self.env()},
            timeout=30,
            check=False,
        )
        err = done.stderr.decode()
        # kadmin.local -q exits 0 even when its query fails: read what it printed.
        if done.returncode != 0 or (argv[0] == "kadmin.local" and _KADMIN_FAILED.search(err)):
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {err[-500:]}")
        return done.stdout.decode()

    def start(self) -> KerberosRealm:
        missing = tools_missing()
        if missing:
            raise KDCUnavailable(
                f"MIT Kerberos programs {', '.join(missing)} are missing: run hack/install-krb5.sh "
                "(apt-get install krb5-kdc krb5-admin-server)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        d = self.directory
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f" kdc_listen = 127.0.0.1:{self.port}\n"
            f" kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f" {self.realm} = {{\n"
            f"  database_name = {d / 'principal'}\n"
            f"  key_stash_file = {d / 'stash'}\n"
            f"  acl_file = {d / 'kadm5.acl'}\n"
            f"  max_life = {self.max_life}\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            " }\n"
            "[logging]\n"
            f" kdc = FILE:{d / 'kdc.log'}\n"
        )
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f" default_realm = {self.realm}\n"
            " dns_lookup_kdc = false\n"
            " dns_lookup_realm = false\n"
            " rdns = false\n"
            " dns_canonicalize_hostname = false\n"
            " udp_preference_limit = 1\n"
            "[realms]\n"
            f" {self.realm} = {{\n"
            f"  kdc = 127.0.0.1:{self.port}\n"
            " }\n"
        )
        (d / "kadm5.acl").write_text("")
        # -P would put the master password on the command line; kdb5_util reads it twice from stdin.
        master = secrets.token_urlsafe(24)
        self._run("kdb5_util", "-r", self.realm, "create", "-s", stdin=f"{master}\n{master}\n")
        log = open(d / "krb5kdc.out", "wb")  # noqa: SIM115  # handed to the child, closed at stop
        self._process = subprocess.Popen(
            ["krb5kdc", "-n", "-r", self.realm],
            env={**os.environ, **self.env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"krb5kdc exited: {(d / 'krb5kdc.out').read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT_S:g}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> KerberosRealm:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- principals -----------------------------------------------------------------------------

    def principal(self, name: str) -> str:
        return name if "@" in name else f"{name}@{self.realm}"

    def add_user(self, name: str, password: str, *, max_life: str | None = None) -> str:
        """A user principal that must pre-authenticate (as Active Directory requires by default)."""
        life = f' -maxlife "{max_life}"' if max_life else ""
        principal = self.principal(name)
        # addprinc prompts for the password twice when -pw is not given: stdin keeps it off argv.
        self._run(
            "kadmin.local",
            "-r",
            self.realm,
            "-q",
            f"addprinc +requires_preauth{life} {principal}",
            stdin=f"{password}\n{password}\n",
        )
        return principal

    def add_service(self, hostname: str, keytab: Path, service: str = "HTTP") -> str:
        """The host's service principal with a random key, exported to `keytab` (mode 0600)."""
        principal = self.principal(f"{service}/{hostname.lower()}")
        self._run("kadmin.local", "-r", self.realm, "-q", f"addprinc -randkey {principal}")
        self._run("kadmin.local", "-r", self.realm, "-q", f"ktadd -k {keytab} {principal}")
        os.chmod(keytab, 0o600)
        return principal

    def expire_password(self, name: str) -> None:
        self._run(
            "kadmin.local",
            "-r",
            self.realm,
            "-q",
            f'modprinc -pwexpire "2020-01-01 00:00:00" {self.principal(name)}',
        )
