"""Closed-loop HTTP load on loopback: ``wrk`` when installed, else an aiohttp client process.

:func:`run_load` keeps ``connections`` connections busy for ``duration_s``, each sending the next
request of a list (round robin) as soon as its previous answer arrived, and returns the request
rate and latency percentiles. Both sides of a comparison (the daemon and its bare reference) are
always driven by the same generator with the same settings in the same run.

* ``wrk`` (C, its own threads; ``apt-get install wrk``): a generated Lua script supplies the
  requests (method, path, headers, body) and prints the summary as JSON from ``done()``.
* ``aiohttp`` fallback (``python -m bench.loadgen SPEC.json``, a separate process so it never shares
  a loop or a GIL with what it measures): one coroutine per connection. A Python client saturates a
  core at a few thousand requests per second, so its absolute figures are lower than wrk's; the
  ratios between two servers driven the same way remain comparable.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import child_env, cpu_seconds


@dataclass(frozen=True)
class Request:
    """One request of the round robin."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


CLIENT_LIMIT = 0.9
"""A load generator thread busy this share of a core or more is the limit (SPEC §17) — unless the
server is saturated too (:func:`client_limited`)."""
SERVER_SATURATED = 0.9
"""A server process using this share of a core or more is saturated (one event loop)."""


def wrk_available() -> bool:
    """True when ``wrk`` is on the PATH."""
    return shutil.which("wrk") is not None


def ensure_wrk() -> bool:
    """Install ``wrk`` with apt-get when it is missing and this is root on Debian/Ubuntu.

    :returns: whether ``wrk`` is available afterwards.
    """
    if wrk_available():
        return True
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    print("[loadgen] wrk is missing: apt-get install wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(argv, env=env, check=False, capture_output=True).returncode != 0:
            return False
    return wrk_available()


def pick_tool(tool: str) -> str:
    """``auto`` → ``wrk`` (installed with apt-get when missing, if possible), else ``aiohttp``."""
    if tool == "auto":
        return "wrk" if ensure_wrk() else "aiohttp"
    if tool not in ("wrk", "aiohttp"):
        raise ValueError(f"unknown load generator {tool!r}")
    return tool


def _lua_str(text: str) -> str:
    level = "="
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_script(requests: list[Request]) -> str:
    """A wrk Lua script: round robin over ``requests``; ``done()`` prints one ``WRKJSON`` line."""
    # The requests are formatted in init(): wrk.format() fills in the Host header from wrk.host,
    # which is not set yet while the script's top level runs (every request would be a 400).
    lines = ["local reqs = {}", "local function build()"]
    for i, r in enumerate(requests, 1):
        # "[ [=[k]=] ]": without the spaces "[[" would open a long string.
        headers = ", ".join(f"[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in r.headers)
        body = _lua_str(r.body) if r.body is not None else "nil"
        lines.append(
            f"  reqs[{i}] = wrk.format({_lua_str(r.method)}, {_lua_str(r.path)}, {{{headers}}}, {body})"
        )
    lines.append(
        """end
local i = 0
local counter = 0
function setup(thread)
  thread:set("offset", counter)
  counter = counter + 97
end
function init(args)
  build()
  i = (offset or 0) % #reqs
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "non2xx": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write,
    e.timeout))
end
"""
    )
    return "\n".join(lines)


def _summary(
    tool: str,
    connections: int,
    requests: int,
    duration_s: float,
    p50: float,
    p90: float,
    p99: float,
    max_ms: float,
    non2xx: int,
    errors: int,
) -> dict[str, Any]:
    return {
        "tool": tool,
        "connections": connections,
        "requests": requests,
        "duration_s": round(duration_s, 3),
        "rps": requests / duration_s if duration_s > 0 else 0.0,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": max_ms,
        "non2xx": non2xx,
        "errors": errors,
    }


def _run_wrk(
    base_url: str, requests: list[Request], connections: int, duration_s: float, threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-wrk-") as tmp:
        script = Path(tmp) / "requests.lua"
        script.write_text(wrk_script(requests), encoding="utf-8")
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return _summary(
        "wrk",
        connections,
        raw["requests"],
        raw["duration_us"] / 1e6,
        raw["p50_us"] / 1000,
        raw["p90_us"] / 1000,
        raw["p99_us"] / 1000,
        raw["max_us"] / 1000,
        raw["non2xx"],
        errors,
    )


def _run_aiohttp(
    base_url: str, requests: list[Request], connections: int, duration_s: float
) -> dict[str, Any]:
    spec = {
        "base_url": base_url,
        "connections": connections,
        "duration_s": duration_s,
        "requests": [
            {"method": r.method, "path": r.path, "headers": dict(r.headers), "body": r.body}
            for r in requests
        ],
    }
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-load-") as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        out = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", str(path)],
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=True,
            env=child_env(),
        ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_load(
    base_url: str,
    requests: list[Request],
    *,
    connections: int,
    duration_s: float,
    tool: str = "auto",
    threads: int = 2,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Drive ``base_url`` with ``connections`` closed-loop connections for ``duration_s``.

    wrk takes whole seconds only: ``duration_s`` is rounded for it (at least 1 s). The CPU both
    sides used is recorded: the load generator's from this process's reaped children (it is the
    only child that ends during the run), the server's from ``/proc/<server_pid>/stat``.

    :returns: ``{tool, connections, threads, requests, duration_s, rps, p50_ms, p90_ms, p99_ms,
        max_ms, non2xx, errors, client_cpu_s, client_cores_per_thread, server_cpu_s,
        server_cores, client_limited}``.
    """
    chosen = pick_tool(tool)
    threads = min(threads, connections) if chosen == "wrk" else 1
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    children_before = _children_cpu_s()
    if chosen == "wrk":
        result = _run_wrk(base_url, requests, connections, duration_s, threads)
    else:
        result = _run_aiohttp(base_url, requests, connections, duration_s)
    client_cpu_s = _children_cpu_s() - children_before
    wall = result["duration_s"] or duration_s
    result["threads"] = threads
    result["client_cpu_s"] = round(client_cpu_s, 3)
    result["client_cores_per_thread"] = round(client_cpu_s / wall / threads, 3)
    if server_pid:
        server_cpu_s = cpu_seconds(server_pid) - server_before
        result["server_cpu_s"] = round(server_cpu_s, 3)
        result["server_cores"] = round(server_cpu_s / wall, 3)
        # CPU per answer: what the server's work costs, whatever share of the CPUs it got (the
        # steadier figure on a busy machine, where req/s follows the share).
        requests = max(1, result["requests"])
        result["server_cpu_us_per_request"] = round(server_cpu_s / requests * 1e6, 1)
    result["client_limited"] = client_limited(result)
    return result


def client_limited(result: dict[str, Any]) -> bool:
    """Whether the load generator, not the server, was the limit of a run (SPEC §17).

    So when each generator thread was busy ≥ :data:`CLIENT_LIMIT` of a core while the server was
    below :data:`SERVER_SATURATED` of one. Without a server reading, a busy generator counts as
    the limit.
    """
    busy = result.get("client_cores_per_thread", 0.0) >= CLIENT_LIMIT
    return bool(busy and result.get("server_cores", 0.0) < SERVER_SATURATED)


def cpu_note(runs: list[dict[str, Any]]) -> tuple[str, bool]:
    """One line on the CPU both sides used over ``runs``, and whether any run must be rejected."""
    rejected = any(r.get("client_limited") for r in runs)
    server = [r["server_cores"] for r in runs if "server_cores" in r]
    client = [r["client_cores_per_thread"] for r in runs if "client_cores_per_thread" in r]
    per_request = sorted(
        r["server_cpu_us_per_request"] for r in runs if "server_cpu_us_per_request" in r
    )
    line = (
        f"server {min(server, default=0):.2f}–{max(server, default=0):.2f} cores, "
        f"load generator {max(client, default=0):.2f} of a core per thread at most"
    )
    if per_request:
        line += f", server CPU {per_request[len(per_request) // 2]:.0f} µs per answer (median)"
    unsaturated = sum(1 for cores in server if cores < SERVER_SATURATED)
    if unsaturated:
        # Not a rejection (the generator was not the limit), but the figures are then set by
        # whatever else used the CPUs: say so next to them.
        line += (
            f"; server below {SERVER_SATURATED:.0%} of a core in {unsaturated}/{len(server)} runs"
        )
    if rejected:
        line += " — REJECTED: the load generator was the limit"
    return line, rejected


def cpu_per_answer_ratio(
    ours: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> float | None:
    """Median server CPU per answer of ``ours`` ÷ the reference's (None without readings)."""
    a = sorted(r["server_cpu_us_per_request"] for r in ours if "server_cpu_us_per_request" in r)
    b = sorted(
        r["server_cpu_us_per_request"] for r in reference if "server_cpu_us_per_request" in r
    )
    if not a or not b:
        return None
    return a[len(a) // 2] / b[len(b) // 2]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- aiohttp client process


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    from bench.common import percentile

    base, connections = spec["base_url"], int(spec["connections"])
    reqs = [
        (r["method"], base + r["path"], r["headers"], (r["body"] or "").encode() or None)
        for r in spec["requests"]
    ]
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    stop_at = time.perf_counter() + float(spec["duration_s"])
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(offset: int, session: aiohttp.ClientSession) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            method, url, headers, body = reqs[i % len(reqs)]
            i += 1
            started = time.perf_counter()
            try:
                async with session.request(method, url, headers=headers, data=body) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 400:
                        counts["non2xx"] += 1
            except (aiohttp.ClientError, TimeoutError):
                counts["errors"] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(n * 97, session) for n in range(connections)))
        elapsed = time.perf_counter() - began
    if not latencies:
        latencies = [float("nan")]
    return _summary(
        "aiohttp",
        connections,
        len(latencies),
        elapsed,
        percentile(latencies, 50),
        percentile(latencies, 90),
        percentile(latencies, 99),
        max(latencies),
        counts["non2xx"],
        counts["errors"],
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.loadgen SPEC.json``: run the aiohttp client, print one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(_client(spec))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
