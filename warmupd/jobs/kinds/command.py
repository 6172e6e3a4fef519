"""``kind = "command"``: run a program on a schedule, never overlapping itself (SPEC §16).

A run has one item, the program. It starts from an argv list (no shell) with a minimal environment
plus ``WARMUPD_JOB``, ``WARMUPD_RUN_ID``, ``WARMUPD_FIRE_TIME``, ``WARMUPD_TRIGGER`` and the job's
``env``, in a new session whose leader is :mod:`warmupd.jobs.kinds.shim` — the group dies with
warmupd even under ``kill -9``. Output is read by the loop as it comes (the last 64 KiB of each
stream kept). ``max_duration`` → SIGTERM to the group, SIGKILL ``kill_grace_s`` later, ``failed``
"timed out". SIGTERM to warmupd → SIGTERM to the group at once, SIGKILL once ``shutdown_grace``
is over, run ``cancelled``. When the program exits, whatever it left in its group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from warmupd.clock import Clock, ms_to_iso
from warmupd.config_kinds import CommandKind
from warmupd.errors import JobError
from warmupd.jobs.base import Fencing, ItemOutcome, Job, RunContext, RunSettings

TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 10.0
"""SIGTERM → SIGKILL when a command outlives ``max_duration``."""
SHIM = Path(__file__).with_name("shim.py")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class _Output(asyncio.SubprocessProtocol):
    """Keeps the tails of stdout and stderr; tells when the leader exits and the pipes close.

    ``Process.wait()`` of asyncio waits for the pipes to close too, so a grandchild holding them
    would hide the exit; this protocol reports the exit by itself.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.tails = {1: bytearray(), 2: bytearray()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        tail = self.tails[fd]
        tail += data
        if len(tail) > TAIL_BYTES:
            del tail[: len(tail) - TAIL_BYTES]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self, fd: int) -> str:
        return self.tails[fd].decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def describe_status(code: int) -> str:
    """``exit status N`` or ``killed by signal SIGTERM``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


class CommandJob(Job[tuple[str, ...]]):
    """A user-defined job that runs a program."""

    stop_on_drain = True

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        shutdown_grace_s: float,
        kill_grace_s: float = KILL_GRACE_S,
        python: str = sys.executable,
    ) -> None:
        self.name = name
        self.lock_key = f"job:{name}:lock"
        self.clock = clock
        self.shutdown_grace_s = shutdown_grace_s
        self.kill_grace_s = kill_grace_s
        self.python = python
        self.pgids: list[int] = []
        """Process groups this job started (tests check that none is left)."""
        self._context: RunContext | None = None
        self._spec = CommandKind(command=("true",))
        self._timeout_s = 0.0
        self.start_run()

    def start_run(self) -> None:
        """Forget the previous run's output."""
        self._summary: dict[str, Any] = {}

    def begin_run(self, context: RunContext) -> None:
        """Keep the run's identity for the ``WARMUPD_*`` variables."""
        self._context = context

    def item_timeout_s(self, settings: RunSettings) -> float | None:
        """None: ``max_duration`` is the program's timeout, enforced here with TERM then KILL."""
        return None

    def run_deadline_s(self, settings: RunSettings) -> float:
        """A backstop past the program's own timeout and kill grace."""
        return settings.max_duration_ms / 1000 + self.kill_grace_s + 5

    async def select(self, settings: RunSettings, now_ms: int) -> list[tuple[str, ...]]:
        """The one item: the argv."""
        spec = settings.spec
        assert isinstance(spec, CommandKind)
        self._spec = spec
        self._timeout_s = settings.max_duration_ms / 1000
        return [spec.command]

    def environment(self) -> dict[str, str]:
        """The program's environment: PATH, LANG, ``WARMUPD_*`` and the job's ``env``."""
        context = self._context
        env = {
            "PATH": os.environ.get("PATH", _DEFAULT_PATH),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "WARMUPD_JOB": self.name,
        }
        if context is not None:
            env |= {
                "WARMUPD_RUN_ID": str(context.run_id),
                "WARMUPD_FIRE_TIME": ms_to_iso(context.fire_ms) or "",
                "WARMUPD_TRIGGER": context.trigger.value,
            }
        return env | self._spec.env

    async def process(self, item: tuple[str, ...], fencing: Fencing, now_ms: int) -> ItemOutcome:
        """Run the program to its end, its timeout, or the daemon's shutdown.

        :raises JobError: ``exit status N: <last stderr line>``, ``timed out …``, cannot start.
        """
        loop = asyncio.get_running_loop()
        try:
            transport, output = await loop.subprocess_exec(
                _Output,
                self.python,
                "-I",
                "-S",
                str(SHIM),
                str(os.getpid()),
                "--",
                *item,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._spec.working_dir,
                env=self.environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise JobError(
                f"cannot start: {exc.strerror or exc} ({self._spec.working_dir})"
            ) from None
        pgid = transport.get_pid()
        self.pgids.append(pgid)
        timed_out = False
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await asyncio.shield(output.exited)
            except TimeoutError:
                timed_out = True
                await self._end_group(pgid, output, self.kill_grace_s)
            except asyncio.CancelledError:
                await self._end_group(pgid, output, self.shutdown_grace_s)
                raise
        finally:
            # Whatever the program left behind in its group goes with it; then the pipes close.
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output.closed), 5)
            code = transport.get_returncode()
            transport.close()
            self._summary = {
                "exitCode": code,
                "stdoutTail": output.text(1),
                "stderrTail": output.text(2),
            }
        if timed_out:
            raise JobError(f"timed out after {self._timeout_s:g}s (max_duration)")
        assert code is not None
        if code in self._spec.success_exit_codes:
            return ItemOutcome.processed()
        lines = [line.strip() for line in output.text(2).splitlines() if line.strip()]
        last = f": {lines[-1][:500]}" if lines else ""
        raise JobError(f"{describe_status(code)}{last}")

    async def _end_group(self, pgid: int, output: _Output, grace_s: float) -> None:
        """SIGTERM the group, SIGKILL it ``grace_s`` later; a second cancellation kills at once."""
        _signal_group(pgid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(output.exited)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            _signal_group(pgid, signal.SIGKILL)
            await asyncio.shield(output.exited)
            raise
        _signal_group(pgid, signal.SIGKILL)
        await asyncio.shield(output.exited)

    def label(self, item: tuple[str, ...]) -> str:
        """Empty: the error of a command run is its exit status alone."""
        return ""

    def summary(self) -> dict[str, Any]:
        """``{exitCode, stdoutTail, stderrTail}``."""
        return dict(self._summary)
