"""Helpers for the job-kind tests: a scripted child program and a /proc view of process groups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of a group this test started (by its pids, never by name)."""
    for pid in group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def group_gone(pgid: int, timeout_s: float = 10.0) -> bool:
    """Whether group ``pgid`` is empty, waiting (bounded) for the kernel to finish killing it.

    warmupd has sent SIGKILL to the group by the time a run is recorded; a process so killed may
    still be on its way out (files closed, not yet a zombie) for a moment after that.
    """
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def wait_for_file(path: Path, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until a child program has written ``path``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s}s")
        await asyncio.sleep(0.01)


class ThreadSite:
    """A loopback site in a thread for tests that drive a daemon subprocess synchronously.

    Every path answers 200 and is counted, except ``/block`` (held until :meth:`release`) and
    ``/fail`` (500). Request headers are kept, so a test can see what the daemon sent.
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.blocked = threading.Event()
        self._release = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits[self.path] += 1
                site.headers.append(dict(self.headers))
                if self.path == "/block":
                    site.blocked.set()
                    site._release.wait(timeout=60)
                body = b"warm"
                self.send_response(500 if self.path == "/fail" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
