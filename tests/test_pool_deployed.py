"""The pool as deployed (issue 17): a sandbox that refuses setpriority, one-line worker output.

Each test runs a small script in a fresh interpreter, because what it sets up — a seccomp filter,
the process-wide logging — must not leak into the test process. The workers are real ``spawn``
processes of that interpreter.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

# setpriority's syscall number and the seccomp audit architecture, per machine.
_SECCOMP = {"x86_64": (141, 0xC000003E), "aarch64": (140, 0xC00000B7)}

# A seccomp filter that makes setpriority fail with EPERM, as systemd's
# `SystemCallFilter=~@resources` + `SystemCallErrorNumber=EPERM` does. Filters are inherited by
# every child, so the pool's spawned workers run under it exactly as under the unit.
DENY_SETPRIORITY = """
import ctypes, struct

def deny_setpriority(nr, arch):
    insns = [
        (0x20, 0, 0, 4),            # A = seccomp_data.arch
        (0x15, 0, 3, arch),         # foreign architecture: allow
        (0x20, 0, 0, 0),            # A = seccomp_data.nr
        (0x15, 0, 1, nr),           # not setpriority: allow
        (0x06, 0, 0, 0x00050001),   # SECCOMP_RET_ERRNO | EPERM
        (0x06, 0, 0, 0x7FFF0000),   # SECCOMP_RET_ALLOW
    ]
    code = b"".join(struct.pack("HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(code, len(code))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
"""


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    # The main guard: spawned workers import the main module again.
    script.write_text(
        textwrap.dedent(body) + "\nif __name__ == '__main__':\n    import asyncio\n"
        "    asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_refused_setpriority_leaves_the_worker_computing(tmp_path: Path) -> None:
    machine = platform.machine()
    if machine not in _SECCOMP:
        pytest.skip(f"no setpriority seccomp numbers for {machine}")
    nr, arch = _SECCOMP[machine]
    result = run_script(
        DENY_SETPRIORITY
        + f"""
import json, math, os
from warmupd.logs import configure_logging
from warmupd.pool import ProcessPool

async def main():
    configure_logging("text", "debug")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    deny_setpriority({nr}, {arch})
    try:
        os.nice(1)
        refused = False
    except PermissionError:
        refused = True
    async with ProcessPool(workers=1, idle_shutdown_s=300, preload=()) as pool:
        value = await pool.run(math.fsum, [0.5] * 8)
        priority = await pool.run(os.getpriority, os.PRIO_PROCESS, 0)
    print(json.dumps({{"refused": refused, "value": value, "before": before,
                      "worker": priority}}))
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["refused"] is True  # the filter really refuses setpriority, in this process too
    assert out["value"] == 4.0  # ...and the worker, which inherited it, still computes
    assert out["worker"] == out["before"]  # at the daemon's priority, since lowering was refused
    lines = result.stderr.splitlines()
    assert [line for line in lines if "pool.priority_unchanged" in line]
    assert all(RECORD.match(line) for line in lines), lines


def test_a_worker_that_fails_at_start_reports_one_record_per_line(tmp_path: Path) -> None:
    """A failing initializer (here: a preload hook that cannot be imported) is one record."""
    result = run_script(
        """
import math
from warmupd.errors import ProducerError
from warmupd.logs import configure_logging
from warmupd.pool import ProcessPool

async def main():
    configure_logging("text", "info")
    async with ProcessPool(workers=1, idle_shutdown_s=300, preload=("no_such_module_xyz",)) as pool:
        try:
            await pool.run(math.fsum, [1.0])
        except ProducerError:
            print("producer error")
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "producer error"
    lines = result.stderr.splitlines()
    assert lines, "the worker's failure was not reported at all"
    assert all(RECORD.match(line) for line in lines), lines  # no raw traceback line
    failure = [line for line in lines if "ModuleNotFoundError" in line]
    assert failure
    assert failure[0].split()[1] in ("ERROR", "CRITICAL")


def test_warnings_and_uncaught_exceptions_in_a_worker_are_one_record_each(tmp_path: Path) -> None:
    result = run_script(
        """
import threading
from warmupd.logs import configure_logging
from warmupd.pool import ProcessPool

def noisy() -> str:
    import warnings
    warnings.warn("a library complains\\nover two lines", RuntimeWarning, stacklevel=1)
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start()
    thread.join()
    return "done"

async def main():
    configure_logging("text", "info")
    async with ProcessPool(workers=1, idle_shutdown_s=300, preload=()) as pool:
        print(await pool.run(noisy))
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    lines = result.stderr.splitlines()
    assert all(RECORD.match(line) for line in lines), lines
    assert [line for line in lines if line.split()[1] == "WARNING" and "py.warnings" in line]
    assert [line for line in lines if "thread.uncaught" in line and "ZeroDivisionError" in line]
