"""A program the command-kind tests run: ``kinds_child.py <dir> <mode> [args]``.

It writes marker files into ``<dir>`` so the tests can tell what happened without timing anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    where, mode, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    (where / "child.pid").write_text(str(os.getpid()))
    if mode == "print-many":
        sys.stdout.write("".join(f"line {n}\n" for n in range(100_000)))
        return 0
    if mode == "exit":
        print("starting", flush=True)
        print("warning: something odd\ncannot warm: upstream said no", file=sys.stderr)
        return int(args[0])
    if mode == "env":
        for key, value in sorted(os.environ.items()):
            print(f"{key}={value}")
        print(f"CWD={os.getcwd()}")
        return 0
    if mode == "leave-behind":
        # A background process that would outlive the command and hold its output pipe.
        subprocess.Popen(["sleep", "300"])
        return 0
    if mode == "stubborn":
        # Ignores TERM, and so does its own child: only SIGKILL of the group ends them.
        signal.signal(signal.SIGTERM, lambda *_: print("got SIGTERM, ignoring it", flush=True))
        grandchild = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal,time; signal.signal(15, signal.SIG_IGN); time.sleep(300)",
            ]
        )
        (where / "grandchild.pid").write_text(str(grandchild.pid))
        while True:
            time.sleep(1)
    if mode == "polite":

        def leave(*_: object) -> None:
            (where / "got-term").write_text("yes")
            print("got SIGTERM, leaving", flush=True)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, leave)
        (where / "ready").write_text("yes")
        while True:
            time.sleep(1)
    if mode == "spawn-and-wait":
        # For the kill -9 test: a grandchild in the group, both pids written down, then wait.
        grandchild = subprocess.Popen(["sleep", "300"])
        (where / "grandchild.pid").write_text(str(grandchild.pid))
        (where / "ready").write_text(str(os.getpgid(0)))
        while True:
            time.sleep(1)
    if mode == "wait-for":
        # Runs until the test creates the file: a run that stays in progress as long as needed.
        (where / "ready").write_text("yes")
        while not Path(args[0]).exists():
            time.sleep(0.02)
        print("done waiting")
        return 0
    if mode == "sleep":
        time.sleep(float(args[0]))
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
