"""Helpers shared by the benchmarks: the machine line, statistics, interleaved repetitions, results.

Every benchmark module exposes ``run(quick: bool) -> Result`` (bounded in time, loopback only) and a
``main(argv)`` for ``python -m bench.NAME``; ``python -m bench`` runs several and prints a summary.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("WARMUPD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_PACKAGES = ("aiosqlite", "redis", "croniter", "APScheduler", "aiohttp")


@dataclass(frozen=True)
class Verdict:
    """One performance target: the figure, the reference measured beside it, and whether it is met.

    ``ratio`` is figure/reference oriented so that the target reads ``ratio <op> bound``.
    """

    target: str
    what: str
    figure: str
    reference: str
    ratio: float | None
    bound: str
    met: bool


@dataclass
class Result:
    """What a benchmark hands back: its verdicts plus every raw figure (saved as JSON)."""

    name: str
    verdicts: list[Verdict]
    data: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def package_versions(names: Sequence[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages the figures depend on (``-`` when absent)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def sqlite_version() -> str:
    """The SQLite library version Python links against."""
    import sqlite3

    return sqlite3.sqlite_version


def machine_line() -> str:
    """CPU model, cores, RAM, kernel, Python and key package versions, on one line."""
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_ram_gib():.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"SQLite {sqlite_version()}; {versions}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of ``values``."""
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


async def interleaved(
    variants: dict[str, Callable[[], Awaitable[float]]], repetitions: int
) -> dict[str, list[float]]:
    """Run each variant once per repetition in ABAB… order; collect what each call returns.

    Interleaving spreads slow drift of the machine (other load, thermal, a WAL checkpoint) over all
    variants instead of charging it to whichever ran last. The order alternates per repetition
    (AB, BA, AB …) so neither variant always runs right after the other's warm caches.
    """
    out: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(repetitions):
        for name in names if rep % 2 == 0 else reversed(names):
            out[name].append(await variants[name]())
    return out


def write_results(result: Result) -> Path:
    """Save a benchmark's result as ``bench/results/<name>-<timestamp>.json`` (gitignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = RESULTS_DIR / f"{result.name}-{stamp}.json"
    payload = {
        "name": result.name,
        "machine": machine_line(),
        "wall_s": round(result.wall_s, 2),
        "verdicts": [asdict(v) for v in result.verdicts],
        "data": result.data,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def print_verdicts(verdicts: Sequence[Verdict]) -> None:
    """One line per target: MET/MISSED, the figure, the reference and the ratio."""
    for v in verdicts:
        ratio = "" if v.ratio is None else f" ratio {v.ratio:.3f}"
        print(
            f"{v.target} {v.what}: {'MET' if v.met else 'MISSED'} — {v.figure}; "
            f"reference {v.reference};{ratio} (target {v.bound})"
        )


def finish(result: Result, started: float) -> Result:
    """Stamp the wall time, print the verdicts and save the JSON."""
    result.wall_s = time.perf_counter() - started
    print_verdicts(result.verdicts)
    path = write_results(result)
    print(f"[{result.name}] {result.wall_s:.1f} s; results in {path}")
    return result
