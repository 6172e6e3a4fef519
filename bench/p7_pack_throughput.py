"""P7 — ``GET /api/comparison/{slug}`` on a warm cache, req/s beside the strict reference (SPEC §17).

Run: ``python -m bench.p7_pack_throughput`` (3 × 5 s per server and backend, ~70 s; ``--quick``
for 1 × 2 s; ``--backend sqlite|postgresql|both``, default both; ``--tool wrk|aiohttp`` to choose
the load generator, default wrk, installed with apt-get when missing; ``--threads``/
``--connections`` for wrk).

* warmupd: the real daemon (``python -m warmupd serve``, builtin insights) with ``warmupd
  demo-data`` comparisons whose forecasts and insight packs were computed by running the two
  warmup jobs first, so every GET is a cache hit (``freshness: fresh``); its state in the SQLite
  file, then in a fresh PostgreSQL database (SPEC §14; created and dropped by the benchmark, its
  leases there too), each backend measured with its own reference runs.
* reference: :mod:`bench.bare_app`, the fastest aiohttp handler for the same answer: it returns the
  daemon's own pack for each slug, byte for byte, encoded once at start-up (no per-request JSON).

Both are driven by the same closed-loop generator with the same threads and connections, round-robin
over every warm slug, alternating ABBA…; the figure is the median req/s of the repetitions. The CPU
of the server and of the load generator is recorded for every run; a run in which the generator was
the limit (a thread busy ≥ 90 % of a core while the server was below 90 % of one) rejects the
verdict.
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

from bench import pg
from bench.common import Result, Verdict, finish, machine_line
from bench.loadgen import Request, cpu_note, cpu_per_answer_ratio, pick_tool, run_load
from bench.procs import BenchApp, http_raw

TARGET_RATIO = 0.7
CONNECTIONS = 64
THREADS = 2


def measure(
    workdir: Path,
    *,
    comparisons: int,
    duration_s: float,
    repetitions: int,
    tool: str,
    threads: int = THREADS,
    connections: int = CONNECTIONS,
    backend: str = "sqlite",
) -> dict[str, Any]:
    """Warm a daemon, then alternate load runs against it and the strict reference."""
    workdir = workdir / backend
    with pg.bench_daemon(
        backend, workdir / "daemon", {"daemon": {"pool_workers": 2}}, "p7"
    ) as daemon:
        daemon.demo_data(comparisons)
        with daemon.start():
            slugs = daemon.warm()
            # The daemon's answers byte for byte: the reference serves exactly these.
            packs = {s: http_raw(f"{daemon.url}/api/comparison/{s}")[1].decode() for s in slugs}
            packs_path = workdir / "packs.json"
            packs_path.write_text(json.dumps(packs), encoding="utf-8")
            body_bytes = round(statistics.mean(len(p.encode()) for p in packs.values()))
            requests = [Request("GET", f"/api/comparison/{slug}") for slug in slugs]
            runs: dict[str, list[dict[str, Any]]] = {"warmupd": [], "bare": []}
            with BenchApp(workdir, "bench.bare_app", "--packs", str(packs_path)) as bare:
                servers = {"warmupd": (daemon.url, daemon.pid), "bare": (bare.url, bare.pid)}
                for rep in range(repetitions):
                    for name in ("warmupd", "bare") if rep % 2 == 0 else ("bare", "warmupd"):
                        url, pid = servers[name]
                        runs[name].append(
                            run_load(
                                url,
                                requests,
                                connections=connections,
                                duration_s=duration_s,
                                tool=tool,
                                threads=threads,
                                server_pid=pid,
                            )
                        )
    return {
        "backend": backend,
        "slugs": len(slugs),
        "body_bytes": body_bytes,
        "threads": threads,
        "connections": connections,
        "runs": runs,
    }


def _verdict(data: dict[str, Any], chosen: str) -> Verdict:
    """Print one backend's figures; its verdict."""
    runs = data["runs"]
    rps = {name: statistics.median(r["rps"] for r in runs[name]) for name in runs}
    p99 = {name: statistics.median(r["p99_ms"] for r in runs[name]) for name in runs}
    bad = sum(r["non2xx"] + r["errors"] for rs in runs.values() for r in rs)
    ratio = rps["warmupd"] / rps["bare"] if rps["bare"] else 0.0
    print(f"  {data['backend']}:")
    for name in runs:
        print(
            f"    {name:8} {rps[name]:8.0f} req/s (runs {[round(r['rps']) for r in runs[name]]}), "
            f"p99 {p99[name]:.1f} ms; {cpu_note(runs[name])[0]}"
        )
    note, rejected = cpu_note([r for rs in runs.values() for r in rs])
    cpu_ratio = cpu_per_answer_ratio(runs["warmupd"], runs["bare"])
    if cpu_ratio is not None:
        print(f"    server CPU per answer: warmupd / reference = {cpu_ratio:.2f}")
    data.update(
        rps=rps, p99_ms=p99, bad_responses=bad, rejected=rejected, cpu_per_answer_ratio=cpu_ratio
    )
    return Verdict(
        target="P7",
        what=f"GET /api/comparison/{{slug}} warm, {data['backend']}, {data['body_bytes']} B, "
        f"{data['connections']} conns, {data['threads']} threads",
        figure=f"{rps['warmupd']:,.0f} req/s (p99 {p99['warmupd']:.1f} ms)",
        reference=f"strict reference (pre-encoded bytes) {rps['bare']:,.0f} req/s ({chosen}; "
        f"{note})",
        ratio=ratio,
        bound=f"≥ {TARGET_RATIO} × reference",
        met=ratio >= TARGET_RATIO and bad == 0 and not rejected,
    )


def run(
    quick: bool = False,
    tool: str = "auto",
    threads: int = THREADS,
    connections: int = CONNECTIONS,
    backend: str = "both",
) -> Result:
    """Run P7 on each backend and return the verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p7_pack_throughput] machine: {machine_line()}")
    chosen = pick_tool(tool)
    data: dict[str, Any] = {"tool": chosen}
    verdicts: list[Verdict] = []
    for name in pg.measurable(backend, "P7", verdicts):
        with tempfile.TemporaryDirectory(prefix="warmupd-bench-p7-") as tmp:
            data[name] = measure(
                Path(tmp),
                comparisons=4 if quick else 20,
                duration_s=2.0 if quick else 5.0,
                repetitions=1 if quick else 3,
                tool=chosen,
                threads=threads,
                connections=connections,
                backend=name,
            )
        verdicts.append(_verdict(data[name], chosen))
    return finish(Result(name="p7_pack_throughput", verdicts=verdicts, data=data), started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p7_pack_throughput [--quick] [--backend …] [--tool …] [--threads N]
    [--connections N]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.p7_pack_throughput", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 comparisons, one 2 s run each")
    parser.add_argument("--backend", default="both", choices=["both", *pg.BACKENDS])
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "aiohttp"])
    parser.add_argument("--threads", type=int, default=THREADS, help="wrk threads")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    args = parser.parse_args(argv)
    result = run(args.quick, args.tool, args.threads, args.connections, args.backend)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
