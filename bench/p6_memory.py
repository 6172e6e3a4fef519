"""P6 — daemon memory: idle after start-up, during a forecast run, after the pool's idle shutdown.

Run: ``python -m bench.p6_memory`` (~35 s; ``--quick`` for a small run).

The real daemon (``python -m warmupd serve``, SQLite, ``pool_workers = 2``,
``pool_idle_shutdown = "5s"``) with ``warmupd demo-data`` comparisons. Readings from
``/proc/PID/status`` (``VmRSS``) and ``/proc/PID/smaps_rollup`` (``Pss``, which splits shared pages
among the processes sharing them), for the main process and separately for its children: the pool
workers and multiprocessing's resource tracker (started with the first pool and alive until the
daemon exits).

1. idle: 3 s after ``/healthz`` first answers (no pool yet);
2. during ``warmup-forecasts`` over every comparison: sampled every 0.2 s, maxima reported;
3. after the run, once the pool workers are gone (idle shutdown) plus 1 s.

Targets: idle main RSS ≤ 80 MB; after shutdown main RSS ≤ 1.2 × idle. Also checked from outside:
which heavy native libraries (numpy, pandas, scipy, statsmodels) the main process has mapped, and,
in a separate interpreter, which import chain in ``warmupd`` pulls each of them in.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, Verdict, finish, machine_line
from bench.procs import BenchDaemon, child_env, children, cmdline, mapped_libraries, pss_kb
from bench.procs import status_kb as rss_kb

IDLE_TARGET_MB = 80.0
AFTER_RATIO = 1.2
HEAVY = ("numpy", "pandas", "scipy", "statsmodels")

_CHAIN_SCRIPT = """
import builtins, json, sys, traceback
heavy = %r
chains = {}
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    top = name.split(".")[0]
    if top in heavy and top not in chains and top not in sys.modules:
        chains[top] = [f"{f.filename.split('/warmupd/')[-1]}:{f.lineno}"
                       for f in traceback.extract_stack()[:-1] if "/warmupd/" in f.filename]
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import warmupd.daemon, warmupd.cli
print(json.dumps({"chains": chains,
                  "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(heavy))}))
"""


def import_chains() -> dict[str, Any]:
    """Which heavy packages importing the daemon pulls in, and from which ``warmupd`` lines."""
    out = subprocess.run(
        [sys.executable, "-c", _CHAIN_SCRIPT % (HEAVY,)],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
        timeout=60,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def snapshot(pid: int) -> dict[str, Any]:
    """RSS/PSS (MB) of the main process and each child, labelled by role."""
    procs = {"main": {"rss_mb": rss_kb(pid) / 1024, "pss_mb": pss_kb(pid) / 1024}}
    for child in children(pid):
        line = cmdline(child)
        role = (
            "worker"
            if "spawn_main" in line
            else "tracker"
            if "resource_tracker" in line
            else "other"
        )
        procs[f"{role}:{child}"] = {"rss_mb": rss_kb(child) / 1024, "pss_mb": pss_kb(child) / 1024}
    return procs


def _sum(snap: dict[str, Any], role: str, key: str = "rss_mb") -> float:
    return float(sum(v[key] for k, v in snap.items() if k.split(":")[0] == role))


def measure(workdir: Path, comparisons: int, timeout_s: float = 180.0) -> dict[str, Any]:
    """The three phases (see the module docstring)."""
    daemon = BenchDaemon(
        workdir / "daemon", {"daemon": {"pool_workers": 2, "pool_idle_shutdown": "5s"}}
    )
    daemon.demo_data(comparisons)
    with daemon.start():
        pid = daemon.pid
        time.sleep(3.0)
        idle = snapshot(pid)
        idle_libs = mapped_libraries(pid, HEAVY)
        status, body = daemon.request("POST", "/api/jobs/warmup-forecasts", {"limit": comparisons})
        if status != 202:
            raise RuntimeError(f"trigger failed: HTTP {status} {body}")
        run_id = body["runId"]
        samples: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            samples.append(snapshot(pid))
            _, record = daemon.request("GET", f"/api/jobs/runs/{run_id}")
            if record["status"] != "running":
                break
            time.sleep(0.2)
        during_libs = mapped_libraries(pid, HEAVY)
        finished = time.monotonic()
        while time.monotonic() < deadline and any(
            "spawn_main" in cmdline(c) for c in children(pid)
        ):
            time.sleep(0.25)
        workers_gone_s = time.monotonic() - finished
        time.sleep(1.0)
        after = snapshot(pid)
    return {
        "comparisons": comparisons,
        "idle": idle,
        "idle_heavy_libraries": idle_libs,
        "during": {
            "samples": len(samples),
            "max_main_rss_mb": max(s["main"]["rss_mb"] for s in samples),
            "max_workers_rss_mb": max(_sum(s, "worker") for s in samples),
            "max_workers_pss_mb": max(_sum(s, "worker", "pss_mb") for s in samples),
            "max_workers": max(sum(k.startswith("worker") for k in s) for s in samples),
            "max_tracker_rss_mb": max(_sum(s, "tracker") for s in samples),
            "heavy_libraries": during_libs,
        },
        "run": {k: record.get(k) for k in ("id", "status", "processed", "durationMs")},
        "workers_gone_after_s": workers_gone_s,
        "after": after,
        "import_check": import_chains(),
    }


def run(quick: bool = False) -> Result:
    """Run P6 and return its verdicts (printed and saved under ``bench/results/``)."""
    started = time.perf_counter()
    print(f"[p6_memory] machine: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="warmupd-bench-p6-") as tmp:
        data = measure(Path(tmp), 4 if quick else 60)
    idle_main = data["idle"]["main"]["rss_mb"]
    after_main = data["after"]["main"]["rss_mb"]
    after_tracker = _sum(data["after"], "tracker")
    during = data["during"]
    ratio = after_main / idle_main
    chains = data["import_check"]
    print(
        f"  idle: main {idle_main:.1f} MB RSS ({data['idle']['main']['pss_mb']:.1f} MB PSS), "
        f"{len(data['idle']) - 1} children"
    )
    print(
        f"  during ({data['run']['processed']} comparisons, {data['run']['durationMs']} ms): main ≤ "
        f"{during['max_main_rss_mb']:.1f} MB, {during['max_workers']} workers ≤ "
        f"{during['max_workers_rss_mb']:.1f} MB RSS ({during['max_workers_pss_mb']:.1f} MB PSS), "
        f"tracker {during['max_tracker_rss_mb']:.1f} MB"
    )
    print(
        f"  after (workers gone {data['workers_gone_after_s']:.1f} s after the run): main "
        f"{after_main:.1f} MB RSS, tracker {after_tracker:.1f} MB RSS "
        f"({_sum(data['after'], 'tracker', 'pss_mb'):.1f} MB PSS)"
    )
    print(f"  heavy packages the main process imports: {chains['loaded']} via {chains['chains']}")
    verdicts = [
        Verdict(
            target="P6",
            what="idle RSS after start-up (main process, no pool yet)",
            figure=f"{idle_main:.1f} MB",
            reference=f"{IDLE_TARGET_MB:.0f} MB budget",
            ratio=idle_main / IDLE_TARGET_MB,
            bound=f"≤ {IDLE_TARGET_MB:.0f} MB",
            met=idle_main <= IDLE_TARGET_MB,
        ),
        Verdict(
            target="P6",
            what="RSS after pool idle shutdown (main process)",
            figure=f"{after_main:.1f} MB (+ resource tracker {after_tracker:.1f} MB)",
            reference=f"idle {idle_main:.1f} MB; during the run workers "
            f"{during['max_workers_rss_mb']:.0f} MB, main {during['max_main_rss_mb']:.1f} MB",
            ratio=ratio,
            bound=f"≤ {AFTER_RATIO} × idle",
            met=ratio <= AFTER_RATIO,
        ),
        Verdict(
            target="P6",
            what="heavy packages in the main process (numpy, pandas, scipy, statsmodels)",
            figure=", ".join(chains["loaded"]) or "none",
            reference="none (they belong in pool workers)",
            ratio=None,
            bound="none imported",
            met=not chains["loaded"],
        ),
    ]
    return finish(Result(name="p6_memory", verdicts=verdicts, data=data), started)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.p6_memory [--quick]``; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.p6_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 comparisons")
    args = parser.parse_args(argv)
    result = run(args.quick)
    return 0 if all(v.met for v in result.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
