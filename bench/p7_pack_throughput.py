"""P7 — ``GET /api/comparison/{slug}`` on a warm cache, req/s beside a bare aiohttp JSON handler.

Run: ``python -m bench.p7_pack_throughput`` (3 × 5 s per server, ~50 s; ``--quick`` for 1 × 2 s;
``--tool wrk|aiohttp`` to choose the load generator, default wrk when installed).

* warmupd: the real daemon (``python -m warmupd serve``, SQLite, builtin insights) with
  ``warmupd demo-data`` comparisons whose forecasts and insight packs were computed by running the
  two warmup jobs first, so every GET is a cache hit (``freshness: fresh``).
* reference: :mod:`bench.bare_app`, an aiohttp app serving ``web.json_response`` of the daemon's own
  pack for the first slug (same body size and shape; serialised per request like the daemon's).

Both are driven by the same closed-loop generator with the same connections, round-robin over every
warm slug, alternating ABBA…; the figure is the median req/s of the repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, Verdict, finish, machine_line
from bench.loadgen import Request, pick_tool, run_load
from bench.procs import BenchApp, BenchDaemon

TARGET_RATIO = 0.5
CONNECTIONS = 50


def measure(
    workdir: Path, *, comparisons: int, duration_s: float, repetitions: int, tool: str
) -> dict[str, Any]:
    """Warm a daemon, then alternate load runs against it and the bare app."""
    daemon = BenchDaemon(workdir / "daemon", {"daemon": {"pool_workers": 2}})
    daemon.demo_data(comparisons)
    with daemon.start():
        slugs = daemon.warm()
        _, pack = daemon.request("GET", f"/api/comparison/{slugs[0]}")
        pack_path = workdir / "pack.json"
        pack_path.write_text(json.dumps(pack), encoding="utf-8")
        body_bytes = len(json.dumps(pack).encode())
        requests = [Request("GET", f"/api/comparison/{slug}") for slug in slugs]
        runs: dict[str, list[dict[str, Any]]] = {"warmupd": [], "bare": []}
        with BenchApp(workdir, "bench.bare_app", "--pack", str(pack_path)) as bare:
            urls = {"warmupd": daemon.url, "bare": bare.url}
            for rep in range(repetitions):
                for name in ("warmupd", "bare") if rep % 2 == 0 else ("bare", "warmupd"):
                    runs[name].append(
                        run_load(
                            urls[name],
                            requests,
                            connections=CONNECTIONS,
                            duration_s=duration_s,
                            tool=tool,
                        )
                    )
    return {"slugs": len(slugs), "body_bytes": body_bytes, "runs": runs}


def run(quick: bool = False, tool: str = "auto") -> Result:
    """Run P7 and return its verdict (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p7_pack_throughput] machine: {machine_line()}")
    chosen = pick_tool(tool)
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p7-") as tmp:
        data = measure(
            Path(tmp),
            comparisons=4 if quick else 20,
            duration_s=2.0 if quick else 5.0,
            repetitions=1 if quick else 3,
            tool=chosen,
        )
    runs = data["runs"]
    rps = {name: statistics.median(r["rps"] for r in runs[name]) for name in runs}
    p99 = {name: statistics.median(r["p99_ms"] for r in runs[name]) for name in runs}
    bad = sum(r["non2xx"] + r["errors"] for rs in runs.values() for r in rs)
    ratio = rps["warmupd"] / rps["bare"] if rps["bare"] else 0.0
    for name in runs:
        print(
            f"  {name:8} {rps[name]:8.0f} req/s (runs {[round(r['rps']) for r in runs[name]]}), "
            f"p99 {p99[name]:.1f} ms"
        )
    data.update(tool=chosen, connections=CONNECTIONS, rps=rps, p99_ms=p99, bad_responses=bad)
    verdicts = [
        Verdict(
            target="P7",
            what=f"GET /api/comparison/{{slug}} warm, {data['body_bytes']} B, {CONNECTIONS} conns",
            figure=f"{rps['warmupd']:,.0f} req/s (p99 {p99['warmupd']:.1f} ms)",
            reference=f"bare aiohttp JSON handler {rps['bare']:,.0f} req/s ({chosen})",
            ratio=ratio,
            bound=f"≥ {TARGET_RATIO} × bare",
            met=ratio >= TARGET_RATIO and bad == 0,
        )
    ]
    return finish(Result(name="p7_pack_throughput", verdicts=verdicts, data=data), started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p7_pack_throughput [--quick] [--tool auto|wrk|aiohttp]``; exit 1 if missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p7_pack_throughput", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 comparisons, one 2 s run each")
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "aiohttp"])
    args = parser.parse_args(argv)
    result = run(args.quick, args.tool)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
