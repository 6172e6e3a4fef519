"""No orphans however the daemon dies (SPEC §17): kill -9 mid-run leaves no child alive.

Measured before the fix: after ``kill -9`` the pool workers and the multiprocessing resource
tracker stayed alive indefinitely. Workers now die with the daemon (``PR_SET_PDEATHSIG`` plus a
parent watch), and the tracker ends when the last holder of its pipe — a worker — is gone.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess, load_demo, wait_until

pytestmark = pytest.mark.slow


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, starttime)`` of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _children(parent: int) -> dict[int, int]:
    """``{pid: starttime}`` of the live children of ``parent`` (starttime guards pid reuse)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == parent and stat[1] != "Z":
                out[int(entry.name)] = stat[2]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(processes: dict[int, int]) -> list[str]:
    """Those of ``processes`` still running (a zombie is dead: it only waits to be reaped)."""
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            alive.append(f"{pid}: {_cmdline(pid)}")
    return alive


def _forecasting(
    tmp_path: Path, daemons: list[DaemonProcess], name: str
) -> tuple[DaemonProcess, dict[int, int]]:
    """A daemon in the middle of a forecast run, and its children once both workers and the
    resource tracker are up."""
    daemon = DaemonProcess(tmp_path, name, {"daemon": {"pool_workers": 2}})
    load_demo(daemon, count=12)
    daemons.append(daemon.start())
    assert daemon.proc is not None
    pid = daemon.proc.pid
    status, _ = daemon.trigger("warmup-forecasts")
    assert status == 202

    def pool_up() -> dict[int, int]:
        children = _children(pid)
        commands = [_cmdline(child) for child in children]
        workers = [c for c in commands if "spawn_main" in c]
        tracker = [c for c in commands if "resource_tracker" in c]
        return children if len(workers) == 2 and tracker else {}

    return daemon, wait_until(pool_up, timeout_s=60)


def test_kill_9_of_the_daemon_leaves_no_child_alive(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon, children = _forecasting(tmp_path, daemons, "orphans")
    daemon.send(signal.SIGKILL)
    assert daemon.wait_exit() == -signal.SIGKILL
    # A bound, not a timing assertion: the children must be gone within 5 s.
    deadline = time.monotonic() + 5.0
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(children) == []


RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process the reaper of its orphaned descendants while the test runs.

    A child the daemon did not wait for is then reparented to us, where ``waitpid`` finds it;
    one the daemon reaped itself is nobody's child any more (``ChildProcessError``).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("PR_SET_CHILD_SUBREAPER refused")
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


_PR_SET_CHILD_SUBREAPER = 36


def test_a_stop_mid_run_ends_every_child_before_the_daemon_exits(
    tmp_path: Path, daemons: list[DaemonProcess], subreaper: None
) -> None:
    """What systemd checks at a stop: once the main process has exited, nothing of it is left.
    It SIGKILLed the resource tracker at every stop after the pool had been used: the tracker
    ignores SIGTERM and only exited once it noticed the daemon was gone. The tracker must also
    find nothing to complain about: no raw lines on stderr."""
    daemon, children = _forecasting(tmp_path, daemons, "stop")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    outlived = []
    for child in children:
        try:
            os.waitpid(child, 0)  # reparented to us: the daemon exited before it did
        except ChildProcessError:
            continue  # the daemon waited for it before exiting
        outlived.append(child)
    assert outlived == []
    lines = daemon.logs().splitlines()
    assert [line for line in lines if not RECORD.match(line)] == []
