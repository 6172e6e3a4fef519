"""The leader of a command's process group: it makes the whole group die with warmupd.

Run as a script (``python -I -S shim.py <warmupd pid> -- argv…``, stdlib only, nothing imported
from the package), as the first process of a new session. ``PR_SET_PDEATHSIG`` alone would reach
only the direct child of warmupd; here that child is this shim, and its death signal kills the
whole group — the command and everything it started — so a ``kill -9`` of warmupd leaves no
orphan behind. Otherwise the shim only waits: SIGTERM and SIGINT reach the command because warmupd
signals the whole group; the shim outlives them to hand the command's exit status on (a signal
death is passed on as the same signal, so warmupd sees it as the command's own).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR2
"""What the kernel sends this shim when warmupd dies; its handler kills the group."""


def _kill_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Start ``argv[3:]`` in this group and return its exit status."""
    parent, command = int(argv[1]), argv[3:]
    signal.signal(DEATH_SIGNAL, _kill_group)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
        print("warmupd: prctl(PR_SET_PDEATHSIG) failed", file=sys.stderr)
        return 126
    if os.getppid() != parent:
        # warmupd died before the death signal was armed.
        _kill_group()
    # A handler, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(command)  # noqa: S603 - the argv list is the operator's command
    except OSError as exc:
        print(f"warmupd: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    status = child.wait()
    if status < 0:
        if -status != signal.SIGKILL:
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
