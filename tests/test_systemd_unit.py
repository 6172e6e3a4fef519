"""systemd/warmupd.service passes `systemd-analyze verify` silently and scores exposure <= 2.0."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
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


# MemoryDenyWriteExecute=yes holds only if nothing in the process needs writable+executable memory.
# The kernel's PR_SET_MDWE (Linux >= 6.3) enforces the same rule on one process tree, so the child
# below runs warmupd's heavy imports, a forecast fit and a forkserver pool under it.
_MDWE_CHILD = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W|X mapping was allowed: MDWE not in force")
except OSError:
    pass
import concurrent.futures, multiprocessing, sqlite3, ssl
import numpy as np, pandas as pd, aiohttp, aiosqlite, redis, croniter
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

def fit(n):
    y = pd.Series(50 + 10 * np.sin(np.arange(n) * 2 * np.pi / 7) + np.arange(n) % 5)
    res = ETSModel(y, error="add", trend="add", damped_trend=True, seasonal="add",
                   seasonal_periods=7).fit(disp=False)
    return float(res.forecast(30).iloc[-1])

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        print(fit(60), pool.submit(fit, 90).result())
"""


@pytest.mark.slow
def test_runtime_needs_no_writable_executable_memory(tmp_path: Path) -> None:
    script = tmp_path / "mdwe_child.py"
    script.write_text(_MDWE_CHILD)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    if proc.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.split()) == 2


def _elf_problems(path: Path) -> list[str]:
    """Executable-stack or text-relocation markers in a 64-bit little-endian ELF file.

    Either makes the loader call mprotect(PROT_EXEC) on writable memory, which systemd's
    MemoryDenyWriteExecute= refuses (it is stricter than PR_SET_MDWE here).
    """
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    problems: list[str] = []
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, p_flags = struct.unpack_from("<II", data, off)
        if p_type == 0x6474E551 and p_flags & 1:  # PT_GNU_STACK with PF_X
            problems.append("executable stack")
        if p_type == 2:  # PT_DYNAMIC
            d_off, d_size = (
                struct.unpack_from("<Q", data, off + 8)[0],
                struct.unpack_from("<Q", data, off + 32)[0],
            )
            for j in range(0, d_size, 16):
                tag, val = struct.unpack_from("<qQ", data, d_off + j)
                if tag == 0:
                    break
                if tag == 22 or (tag == 30 and val & 4):  # DT_TEXTREL, DF_TEXTREL
                    problems.append("text relocations")
    return problems


def test_no_shared_library_needs_an_executable_stack_or_text_relocations() -> None:
    roots = {Path(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    roots.add(Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload")
    found = {}
    scanned = 0
    for root in roots:
        for lib in root.rglob("*.so*"):
            if lib.is_file():
                scanned += 1
                if problems := _elf_problems(lib):
                    found[str(lib)] = problems
    assert scanned > 50  # numpy, pandas, statsmodels, aiohttp ... were really scanned
    assert found == {}


def test_elf_scan_detects_an_executable_stack(tmp_path: Path) -> None:
    # Proves the scan above can fail: mark a copy of a real library's stack executable.
    lib = min((Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload").glob("*.so"))
    data = bytearray(lib.read_bytes())
    assert _elf_problems(lib) == []
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if struct.unpack_from("<I", data, off)[0] == 0x6474E551:
            struct.pack_into("<I", data, off + 4, struct.unpack_from("<I", data, off + 4)[0] | 1)
    patched = tmp_path / lib.name
    patched.write_bytes(bytes(data))
    assert _elf_problems(patched) == ["executable stack"]
