"""`winnode emulator`: hosts come up on consecutive loopback addresses and the credentials land in a Secret file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from winnode.cli import main


def test_emulator_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    ca_file = tmp_path / "ca.pem"
    code = main(
        [
            "emulator",
            "--hosts", "2",
            "--https",
            "--port", "0",
            "--base-address", "127.0.11.1",
            "--prefix", "cli-",
            "--duration", "0.2",
            "--secrets-file", str(secrets_file),
            "--ca-file", str(ca_file),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "ADDRESS", "PORT", "SCHEME", "USER", "CREDENTIALS-SECRET"]
    rows = [line.split() for line in lines[1:3]]
    assert [r[0] for r in rows] == ["cli-001", "cli-002"]
    assert all(r[3] == "https" and r[5] == f"{r[0]}-winrm" for r in rows)
    assert rows[0][1].startswith("127.0.11.")
    assert rows[0][1] != rows[1][1]
    secrets = list(yaml.safe_load_all(secrets_file.read_text()))
    assert [s["metadata"]["name"] for s in secrets] == ["cli-001-winrm", "cli-002-winrm"]
    assert all(s["type"] == "kubernetes.io/basic-auth" and s["stringData"]["password"] for s in secrets)
    for secret in secrets:
        assert secret["stringData"]["password"] not in out  # passwords only go to the 0600 file
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_emulator_command_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--hosts", "0"]) == 2
    assert main(["emulator", "--auth", "digest", "--duration", "0"]) == 2
    assert "unknown auth modes" in capsys.readouterr().err
    # Kerberos needs a realm: the emulator names what is missing.
    assert main(["emulator", "--auth", "kerberos", "--duration", "0"]) == 2
    assert "needs kerberos_keytab" in capsys.readouterr().err
    assert (
        main(
            ["emulator", "--auth", "kerberos", "--kerberos-keytab", "/nonexistent.keytab", "--duration", "0"]
        )
        == 2
    )
    assert "--kerberos-keytab /nonexistent.keytab is not a file" in capsys.readouterr().err
