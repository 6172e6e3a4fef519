"""systemd/warmupd.service passes `systemd-analyze verify` silently and scores exposure <= 2.0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "warmupd.service"
EXEC_START = "/opt/warmupd/venv/bin/warmupd"


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required in CI (Debian package 'systemd')")
        pytest.skip("systemd-analyze not installed")
    return path


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _staged_unit(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart binary exists (verify checks it is executable).

    Only the binary path changes; the arguments stay as shipped. The fake binary is never run.
    """
    fake = tmp_path / "bin" / "warmupd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text() if text is None else text
    assert f"ExecStart={EXEC_START} " in text
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    staged = unit_dir / "warmupd.service"
    staged.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={fake} "))
    return staged


def _verify(tmp_path: Path, text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_systemd_analyze(), "verify", str(_staged_unit(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exposure(tmp_path: Path, text: str | None = None) -> float:
    proc = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", str(_staged_unit(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Overall exposure level for warmupd\.service: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout
    return float(m.group(1))


def test_verify_prints_nothing(tmp_path: Path) -> None:
    proc = _verify(tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_verify_would_report_a_broken_unit(tmp_path: Path) -> None:
    # Proves the check above can fail: a typo in a directive is reported.
    proc = _verify(tmp_path, UNIT.read_text().replace("ProtectClock=yes", "ProtectClok=yes"))
    assert "ProtectClok" in proc.stdout + proc.stderr


def test_security_exposure_at_most_2(tmp_path: Path) -> None:
    assert _exposure(tmp_path) <= 2.0


def test_exposure_check_detects_a_weak_sandbox(tmp_path: Path) -> None:
    weakened = "\n".join(
        ln
        for ln in UNIT.read_text().splitlines()
        if not ln.startswith(("Protect", "Private", "SystemCall", "Restrict", "Capability"))
    )
    assert _exposure(tmp_path, weakened) > 2.0


def test_unit_carries_the_spec_settings() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == [f"{EXEC_START} serve -c /etc/warmupd/warmupd.toml"]
    assert d["ExecReload"] == ["/bin/kill -s HUP $MAINPID"]
    assert d["WatchdogSec"] == ["30s"]
    assert d["Restart"] == ["on-failure"]
    # Above the default shutdown_grace of 30 s, so a clean drain is never SIGKILLed.
    timeout = d["TimeoutStopSec"][0]
    assert timeout.endswith("s")
    assert int(timeout[:-1]) > 30
    assert d["DynamicUser"] == ["yes"]
    assert d["StateDirectory"] == ["warmupd"]
    assert d["ConfigurationDirectory"] == ["warmupd"]
    assert sorted(d["LoadCredential"]) == [
        "job_secret:/etc/warmupd/job_secret",
        "warmup_secret:/etc/warmupd/warmup_secret",
    ]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["SystemCallFilter"][0] == "@system-service"
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "MemoryDenyWriteExecute",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "PrivateUsers",
    ):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["UMask"] == ["0077"]
