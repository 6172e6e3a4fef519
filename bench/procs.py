"""Processes the HTTP benchmarks start: the real daemon, bare aiohttp references, memory readings.

Everything listens on loopback ports picked free at start. Every process is started here with
:class:`subprocess.Popen` and ended here by its pid (SIGTERM, then SIGKILL if it does not stop);
the daemon's pool workers are its own children and are reaped by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for nested dicts of str/int/bool (enough for a bench config)."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    out = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(f"{s}\n" for s in scalars)
    for key, value in doc.items():
        if isinstance(value, dict):
            out += "\n" + toml(value, f"{prefix}.{key}" if prefix else key)
    return out


def http_json(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> tuple[int, Any]:
    """One blocking loopback request; ``(status, decoded JSON or text)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        raw, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in ctype else raw.decode())


def http_raw(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> tuple[int, bytes]:
    """One blocking loopback request; ``(status, the body's bytes as sent)``."""
    req = urllib.request.Request(url, data=body, method=method)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, all its threads (``/proc/PID/stat``); 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- memory


def status_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM`` …); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages divided among their users); 0 when gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/PID/task/*/children``)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="utf-8") as f:
                out.extend(int(x) for x in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return sorted(set(out))


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (empty when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pool_workers(pid: int) -> list[int]:
    """The daemon's process-pool workers (spawned children running ``spawn_main``)."""
    return [c for c in children(pid) if "spawn_main" in cmdline(c)]


def mapped_libraries(pid: int, needles: tuple[str, ...]) -> list[str]:
    """Shared objects mapped by ``pid`` whose path contains one of ``needles`` (an import check
    from outside: a module with a C extension that was imported is mapped)."""
    found: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                is_library = path.endswith(".so") or ".so." in path
                if is_library and any(n in path for n in needles):
                    found.add(path)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return sorted(found)


# --------------------------------------------------------------------------- the daemon


class BenchDaemon:
    """``python -m warmupd serve`` on a temporary state dir with a bench config and fresh secrets.

    :param extra: config tables merged over the base (``{"daemon": {"pool_workers": 2}}`` …).
    :param database_url: the state in this PostgreSQL database instead of the SQLite file.
    """

    def __init__(
        self, workdir: Path, extra: dict[str, Any] | None = None, database_url: str | None = None
    ) -> None:
        self.dir = workdir
        self.database_url = database_url
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.job_secret = secrets.token_hex(16)
        self.warmup_secret = secrets.token_hex(16)
        config: dict[str, Any] = {
            "daemon": {"state_dir": str(self.dir / "state"), "shutdown_grace": "2s"},
            "http": {"host": "127.0.0.1", "port": self.port},
            "jobs": {
                # Far from any plausible run time: only the bench triggers these jobs.
                "warmup-forecasts": {"schedule": "0 2 1 1 *"},
                "warmup-ai-explanations": {"schedule": "0 3 1 1 *", "min_views": 0},
                "housekeeping": {"schedule": "17 4 1 1 *"},
            },
        }
        if database_url is not None:
            config["database"] = {"url": database_url}
        for table, values in (extra or {}).items():
            if isinstance(values, dict) and isinstance(config.get(table), dict):
                merged = dict(config[table])
                for key, value in values.items():
                    if isinstance(value, dict) and isinstance(merged.get(key), dict):
                        merged[key] = {**merged[key], **value}
                    else:
                        merged[key] = value
                config[table] = merged
            else:
                config[table] = values
        self.config_path = self.dir / "warmupd.toml"
        self.config_path.write_text(toml(config), encoding="utf-8")
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The daemon's pid."""
        assert self.proc is not None
        return self.proc.pid

    def _env(self) -> dict[str, str]:
        return child_env({"JOB_SECRET": self.job_secret, "WARMUP_SECRET": self.warmup_secret})

    def demo_data(self, count: int, seed: int = 7) -> None:
        """``warmupd demo-data --count N`` into the state file (a CLI subprocess)."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "warmupd",
                "demo-data",
                "-c",
                str(self.config_path),
                "--count",
                str(count),
                "--seed",
                str(seed),
            ],
            check=True,
            env=self._env(),
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout_s: float = 30.0) -> BenchDaemon:
        """Start it and wait until ``/healthz`` answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warmupd", "serve", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=self._env(),
            )
        wait_healthy(self.url, self.proc, timeout_s, self.log_path)
        return self

    def stop(self) -> None:
        """SIGTERM by pid (SIGKILL if it does not stop); then any worker it left behind."""
        if self.proc is None:
            return
        left = children(self.proc.pid)
        _stop(self.proc)
        for pid in left:
            # Only pids that were this daemon's children a moment ago and are still orphans.
            if cmdline(pid) and "multiprocessing" in cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> BenchDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """A request to the daemon (job secret attached for writes)."""
        headers = {"X-Job-Secret": self.job_secret} if method != "GET" else {}
        return http_json(self.url + path, method, body, headers, **kw)

    def run_job(self, job: str, limit: int | None = None, timeout_s: float = 300.0) -> Any:
        """Trigger ``job`` and wait for its record."""
        status, body = self.request(
            "POST",
            f"/api/jobs/{job}?wait=true",
            {"limit": limit} if limit else None,
            timeout_s=timeout_s,
        )
        if status != 200:
            raise RuntimeError(f"{job}: HTTP {status}: {body}")
        return body

    def warm(self) -> list[str]:
        """Run the forecasts and insights jobs over every comparison; their slugs.

        The config must let the insights job select them all (``min_views = 0``); every pack is
        then checked to be ``fresh``.
        """
        slugs = self.slugs()
        for job in ("warmup-forecasts", "warmup-ai-explanations"):
            record = self.run_job(job, limit=len(slugs))
            if record["status"] != "success" or record["failed"]:
                raise RuntimeError(f"{job} did not warm everything: {record}")
        for slug in slugs:
            status, pack = self.request("GET", f"/api/comparison/{slug}")
            if status != 200 or pack["freshness"] != "fresh":
                raise RuntimeError(f"{slug} is not warm: HTTP {status} {str(pack)[:200]}")
        return slugs

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.database_url is None else "postgresql"

    def slugs(self, limit: int = 1000) -> list[str]:
        """Slugs in the state, in slug order (read directly; the daemon is the API's owner)."""
        if self.database_url is not None:
            from bench import pg

            url = self.database_url
            sql = f"SELECT slug FROM comparisons ORDER BY slug LIMIT {int(limit)}"
            return [str(s) for s in pg.run_async(lambda: pg.fetch_column(url, sql))]
        import sqlite3

        with sqlite3.connect(self.dir / "state" / "warmupd.db") as db:
            rows = db.execute("SELECT slug FROM comparisons ORDER BY slug LIMIT ?", (limit,))
            return [r[0] for r in rows]

    def logs(self) -> str:
        """The daemon's stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Poll ``GET /healthz`` until 200 (bounded); fail with the log if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if http_json(url + "/healthz", timeout_s=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}: not healthy after {timeout_s} s")


class BenchApp:
    """A reference server (``python -m bench.bare_app`` or ``bench.onloop_app``) on a free port."""

    def __init__(
        self, workdir: Path, module: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.env = child_env(env)
        self.log_path = workdir / f"{module.rsplit('.', 1)[-1]}-{self.port}.log"
        self.argv = [sys.executable, "-m", module, "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> BenchApp:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env)
        wait_healthy(self.url, self.proc, 30.0, self.log_path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)
