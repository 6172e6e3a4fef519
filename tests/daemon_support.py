"""Run the real daemon as a subprocess: config files, HTTP calls on loopback, signals by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.lock_support import free_port, worker_env

JOB_SECRET = "job-secret-for-tests-0123456789"
WARMUP_SECRET = "warmup-secret-for-tests-987654"


def toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A tiny TOML writer for nested dicts of str/int/bool (enough for test configs)."""
    scalars, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = ""
    if scalars:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(scalars) + "\n\n"
    for key, value in tables:
        out += toml(value, f"{prefix}.{key}" if prefix else key)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


class DaemonProcess:
    """``python -m warmupd serve`` with its own config and log file."""

    def __init__(
        self,
        root: Path,
        name: str,
        config: dict[str, Any] | None = None,
        *,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.state_dir = state_dir or self.dir / "state"
        base = {
            "daemon": {"state_dir": str(self.state_dir), "shutdown_grace": "2s", "pool_workers": 1},
            "http": {"host": "127.0.0.1", "port": self.port},
            "jobs": {
                "warmup-forecasts": {"schedule": "0 2 * * *"},
                "warmup-ai-explanations": {"schedule": "0 3 * * 0"},
                "housekeeping": {"schedule": "17 * * * *"},
            },
        }
        self.config = merge(base, config or {})
        self.config_path = self.dir / "warmupd.toml"
        self.write_config(self.config)
        self.log_path = self.dir / "stderr.log"
        self.env = {"JOB_SECRET": JOB_SECRET, "WARMUP_SECRET": WARMUP_SECRET, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(toml(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "warmupd.db"

    def start(self, *, wait: bool = True) -> DaemonProcess:
        env = worker_env()
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warmupd", "serve", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=env,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not healthy after {timeout_s}s:\n{self.logs()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # loopback only
                raw = resp.read()
                status, hdrs = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, hdrs = err.read(), err.code, dict(err.headers)
        ctype = hdrs.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in ctype else raw.decode()), hdrs

    def trigger(self, job: str, *, wait: bool = False) -> tuple[int, Any]:
        status, body, _ = self.request(
            "POST",
            f"/api/jobs/{job}" + ("?wait=true" if wait else ""),
            headers={"X-Job-Secret": JOB_SECRET},
        )
        return status, body

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop (never leaves a process behind)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.send(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_until(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded; not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


def load_demo(daemon: DaemonProcess, count: int = 6) -> None:
    """``warmupd demo-data`` into the daemon's state file (a real CLI subprocess)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "warmupd",
            "demo-data",
            "-c",
            str(daemon.config_path),
            "--count",
            str(count),
        ],
        check=True,
        env=worker_env(),
        capture_output=True,
    )


class NotifyListener:
    """A ``$NOTIFY_SOCKET`` datagram socket collecting what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def seen(self, prefix: str) -> bool:
        return any(m.startswith(prefix) for m in self.messages)
