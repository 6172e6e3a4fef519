"""P3 — ``POST /api/comparison/warmup`` p99 under 200 connections vs a bare aiohttp handler; single flight.

Run: ``python -m bench.p3_warmup_latency`` (~100 s; ``--quick`` for a small smoke run;
``--backend sqlite|postgresql|both``, default both; ``--tool wrk|aiohttp`` picks the load
generator, default wrk, installed with apt-get when missing; ``--threads`` for wrk).

One real daemon (``python -m warmupd serve``, builtin insights, ``pool_workers = 2``) with
``warmupd demo-data`` comparisons; the two warmup jobs are run for the most popular ones first. Its
state is in the SQLite file, then in a fresh PostgreSQL database (SPEC §14; created and dropped by
the benchmark, its leases there too): every step below runs on each backend, with
the reference measured again beside it.

1. **Single flight**: 1,000 concurrent POSTs (1,000 connections, aiohttp in this process) for one
   comparison that is not warm. Verified from the outside through the run log: ``GET
   /api/jobs/runs?job=warmup-on-demand`` must show exactly one run for that slug, ``success`` with
   ``processed = 1``, and every answer must be 202 ``queued``/``running`` or 200 ``ready``.
2. **ready path** (the verdict): 200 closed-loop connections posting ``{"slug": …}`` round robin over
   every warm comparison (each answer: 200 ``ready``) vs the strict reference (SPEC §17),
   :mod:`bench.bare_app`: it reads the POST body and returns the daemon's own ``ready`` answer as
   bytes encoded once at start-up. Same generator, threads and connections, alternating ABBA…,
   median p99 of the repetitions. The CPU of the server and of the load generator is recorded for
   every run; a run where the generator was the limit rejects the verdict.
3. **queued path**: the same load over comparisons that are not warm, so every request finds (or
   starts) a background warmup and answers 202. The daemon's pool workers are paused (SIGSTOP by
   pid, SIGCONT afterwards) during this run so that the measured path is the request path alone and
   does not compete with forecasts for the two cores; the background warmups wait on the paused
   pool. Compared with the bare handler's median from step 2.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import pg
from bench.common import Result, Verdict, finish, machine_line
from bench.loadgen import Request, cpu_note, cpu_per_answer_ratio, pick_tool, run_load
from bench.procs import BenchApp, BenchDaemon, http_raw, pool_workers

TARGET_RATIO = 1.5
GOAL_RATIO = 1.2
CONNECTIONS = 200
THREADS = 2


def _post(secret: str, slug: str) -> Request:
    return Request(
        "POST",
        "/api/comparison/warmup",
        (("Content-Type", "application/json"), ("X-Warmup-Secret", secret)),
        json.dumps({"slug": slug}),
    )


def classify(daemon: BenchDaemon) -> tuple[list[str], list[str]]:
    """``(warm, cold)`` slugs, from ``GET …/status`` (which, unlike the pack GET, never schedules)."""
    warm, cold = [], []
    for slug in daemon.slugs():
        _, body = daemon.request("GET", f"/api/comparison/{slug}/status")
        fresh = all(v == "fresh" for v in body["parts"].values())
        (warm if fresh else cold).append(slug)
    return warm, cold


async def _burst(url: str, secret: str, slug: str, n: int) -> collections.Counter[str]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=n)
    timeout = aiohttp.ClientTimeout(total=60)
    gate = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> str:
        await gate.wait()
        async with session.post(
            url + "/api/comparison/warmup",
            json={"slug": slug},
            headers={"X-Warmup-Secret": secret},
        ) as resp:
            body = await resp.json()
            return f"{resp.status} {body.get('status', body.get('error'))}"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(n)]
        await asyncio.sleep(0)
        gate.set()
        return collections.Counter(await asyncio.gather(*tasks))


def single_flight(
    daemon: BenchDaemon, slug: str, n: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """``n`` concurrent POSTs for ``slug``; then the on-demand runs recorded for it."""
    answers = asyncio.run(_burst(daemon.url, daemon.warmup_secret, slug, n))
    deadline = time.monotonic() + timeout_s
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        _, body = daemon.request("GET", "/api/jobs/runs?job=warmup-on-demand&limit=500")
        runs = [r for r in body["runs"] if r["metadata"].get("slug") == slug]
        if runs and all(r["status"] != "running" for r in runs):
            break
        time.sleep(0.1)
    _, status = daemon.request("GET", f"/api/comparison/{slug}/status")
    ok_answers = all(a.split()[0] in ("200", "202") for a in answers)
    exact = (
        len(runs) == 1
        and runs[0]["status"] == "success"
        and runs[0]["processed"] == 1
        and status["warmup"] == "ready"
    )
    return {
        "requests": n,
        "answers": dict(answers),
        "runs": [
            {k: r[k] for k in ("id", "status", "processed", "skipped", "failed", "durationMs")}
            for r in runs
        ],
        "status_after": status["warmup"],
        "exactly_one": exact and ok_answers,
    }


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def measure(
    workdir: Path,
    *,
    warm_n: int,
    cold_n: int,
    burst: int,
    duration_s: float,
    repetitions: int,
    tool: str,
    threads: int = THREADS,
    backend: str = "sqlite",
) -> dict[str, Any]:
    """Everything P3 reports (see the module docstring)."""
    workdir = workdir / backend
    extra = {"daemon": {"pool_workers": 2}}
    with pg.bench_daemon(backend, workdir / "daemon", extra, "p3") as daemon:
        return {"backend": backend} | _measure(
            daemon, workdir, warm_n, cold_n, burst, duration_s, repetitions, tool, threads
        )


def _measure(
    daemon: BenchDaemon,
    workdir: Path,
    warm_n: int,
    cold_n: int,
    burst: int,
    duration_s: float,
    repetitions: int,
    tool: str,
    threads: int,
) -> dict[str, Any]:
    daemon.demo_data(warm_n + cold_n + 1)
    with daemon.start():
        for job in ("warmup-forecasts", "warmup-ai-explanations"):
            daemon.run_job(job, limit=warm_n)
        warm, cold = classify(daemon)
        flight = single_flight(daemon, cold[0], burst)
        cold = cold[1:]
        ready_reqs = [_post(daemon.warmup_secret, s) for s in warm]
        bare_reqs = [_post("unused", s) for s in warm]
        first = ready_reqs[0]
        status, answer = http_raw(
            daemon.url + first.path, "POST", (first.body or "").encode(), dict(first.headers)
        )
        if status != 200:
            raise RuntimeError(f"warm slug not ready: HTTP {status} {answer[:200]!r}")
        answer_path = workdir / "ready.json"
        answer_path.write_bytes(answer)  # the daemon's answer, byte for byte
        runs: dict[str, list[dict[str, Any]]] = {"warmupd": [], "bare": []}
        with BenchApp(workdir, "bench.bare_app", "--warmup", str(answer_path)) as bare:
            targets = {
                "warmupd": (daemon.url, ready_reqs, daemon.pid),
                "bare": (bare.url, bare_reqs, bare.pid),
            }
            for rep in range(repetitions):
                for name in ("warmupd", "bare") if rep % 2 == 0 else ("bare", "warmupd"):
                    url, reqs, pid = targets[name]
                    runs[name].append(
                        run_load(
                            url,
                            reqs,
                            connections=CONNECTIONS,
                            duration_s=duration_s,
                            tool=tool,
                            threads=threads,
                            server_pid=pid,
                        )
                    )
        workers = pool_workers(daemon.pid)
        _signal_all(workers, signal.SIGSTOP)
        try:
            queued = run_load(
                daemon.url,
                [_post(daemon.warmup_secret, s) for s in cold],
                connections=CONNECTIONS,
                duration_s=duration_s,
                tool=tool,
                threads=threads,
                server_pid=daemon.pid,
            )
            _, state = daemon.request("GET", "/api/status")
        finally:
            _signal_all(workers, signal.SIGCONT)
    return {
        "warm_slugs": len(warm),
        "cold_slugs": len(cold),
        "single_flight": flight,
        "ready": runs,
        "queued": queued,
        "queued_on_demand_after": state.get("onDemand"),
        "threads": threads,
        "paused_workers": len(workers),
    }


def run(
    quick: bool = False, tool: str = "auto", threads: int = THREADS, backend: str = "both"
) -> Result:
    """Run P3 on each backend and return its verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p3_warmup_latency] machine: {machine_line()}")
    chosen = pick_tool(tool)
    data: dict[str, Any] = {"tool": chosen, "connections": CONNECTIONS}
    verdicts: list[Verdict] = []
    for name in pg.measurable(backend, "P3", verdicts):
        with tempfile.TemporaryDirectory(prefix="warmupd-bench-p3-") as tmp:
            data[name] = measure(
                Path(tmp),
                warm_n=3 if quick else 40,
                cold_n=5 if quick else 100,
                burst=100 if quick else 1000,
                duration_s=2.0 if quick else 5.0,
                repetitions=1 if quick else 3,
                tool=chosen,
                threads=threads,
                backend=name,
            )
        verdicts += _verdicts(data[name], chosen, threads)
    return finish(Result(name="p3_warmup_latency", verdicts=verdicts, data=data), started)


def _verdicts(data: dict[str, Any], chosen: str, threads: int) -> list[Verdict]:
    """Print one backend's figures; its verdicts."""
    backend = data["backend"]
    print(f"  {backend}:")
    ready = data["ready"]
    p99 = {name: statistics.median(r["p99_ms"] for r in ready[name]) for name in ready}
    p50 = {name: statistics.median(r["p50_ms"] for r in ready[name]) for name in ready}
    rps = {name: statistics.median(r["rps"] for r in ready[name]) for name in ready}
    bad = sum(r["non2xx"] + r["errors"] for rs in ready.values() for r in rs)
    queued = data["queued"]
    ratio = p99["warmupd"] / p99["bare"]
    q_ratio = queued["p99_ms"] / p99["bare"]
    flight = data["single_flight"]
    for name in ready:
        print(
            f"    ready  {name:8} p50 {p50[name]:6.2f} ms  p99 {p99[name]:6.2f} ms  "
            f"{rps[name]:7.0f} req/s  (p99 runs {[round(r['p99_ms'], 1) for r in ready[name]]}); "
            f"{cpu_note(ready[name])[0]}"
        )
    note, rejected = cpu_note([*ready["warmupd"], *ready["bare"], queued])
    cpu_ratio = cpu_per_answer_ratio(ready["warmupd"], ready["bare"])
    if cpu_ratio is not None:
        print(f"    server CPU per answer, ready path: warmupd / reference = {cpu_ratio:.2f}")
    print(
        f"    queued warmupd  p50 {queued['p50_ms']:6.2f} ms  p99 {queued['p99_ms']:6.2f} ms  "
        f"{queued['rps']:7.0f} req/s  ({data['cold_slugs']} cold slugs, "
        f"{data['paused_workers']} pool workers paused)"
    )
    print(
        f"    single flight: {flight['requests']} requests → answers {flight['answers']}, runs {flight['runs']}"
    )
    data.update(
        p99_ms=p99,
        p50_ms=p50,
        rps=rps,
        bad=bad,
        rejected=rejected,
        cpu_per_answer_ratio=cpu_ratio,
    )
    goal = "met" if ratio <= GOAL_RATIO else "not met"
    return [
        Verdict(
            target="P3",
            what=f"POST warmup p99, ready path, {backend}, {CONNECTIONS} connections",
            figure=f"p99 {p99['warmupd']:.2f} ms (p50 {p50['warmupd']:.2f} ms)",
            reference=f"strict reference p99 {p99['bare']:.2f} ms (p50 {p50['bare']:.2f} ms, "
            f"{chosen} -t{threads}; {note})",
            ratio=ratio,
            bound=f"≤ {TARGET_RATIO} × reference (goal {GOAL_RATIO}: {goal})",
            met=ratio <= TARGET_RATIO and bad == 0 and not rejected,
        ),
        Verdict(
            target="P3",
            what=f"POST warmup p99, queued path, {backend}, {CONNECTIONS} connections",
            figure=f"p99 {queued['p99_ms']:.2f} ms (p50 {queued['p50_ms']:.2f} ms)",
            reference=f"strict reference p99 {p99['bare']:.2f} ms (ready runs above)",
            ratio=q_ratio,
            bound=f"≤ {TARGET_RATIO} × reference",
            met=q_ratio <= TARGET_RATIO
            and queued["non2xx"] + queued["errors"] == 0
            and not rejected,
        ),
        Verdict(
            target="P3",
            what=f"single flight, {backend}, {flight['requests']} concurrent requests for one slug",
            figure=f"{len(flight['runs'])} on-demand run(s), processed "
            f"{[r['processed'] for r in flight['runs']]}",
            reference="exactly 1 run, processed = 1",
            ratio=None,
            bound="exactly 1 computation",
            met=bool(flight["exactly_one"]),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p3_warmup_latency [--quick] [--backend …] [--tool …]``; exit 1 if missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p3_warmup_latency", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one 2 s run each")
    parser.add_argument("--backend", default="both", choices=["both", *pg.BACKENDS])
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "aiohttp"])
    parser.add_argument("--threads", type=int, default=THREADS, help="wrk threads")
    args = parser.parse_args(argv)
    result = run(args.quick, args.tool, args.threads, args.backend)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
