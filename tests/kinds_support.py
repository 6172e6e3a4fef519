"""Helpers for the job-kind tests: a scripted child program and a /proc view of process groups."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

CHILD = Path(__file__).with_name("kinds_child.py")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid: int) -> list[int]:
    """Alias that reads well in asserts: ``assert not group_alive(pgid)``."""
    return group_members(pgid)


async def wait_for_file(path: Path, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until a child program has written ``path``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s}s")
        await asyncio.sleep(0.01)
