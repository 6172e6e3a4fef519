"""``python -m bench [--quick] [names…]``: run the chosen benchmarks (default: all) and summarise.

Names: ``p1`` (job makespan), ``p1ai`` (makespan through the real AI job), ``p2`` (loop lag under a forecast run), ``p3`` (warmup POST latency,
single flight), ``p4`` (locks), ``p5`` (scheduler), ``p6`` (memory), ``p7`` (pack GET throughput),
``p8`` (selection), ``p9`` (forecast quality), ``p10`` (dashboard overview). Every benchmark is bounded in time and talks only to
loopback (the machine's Redis at 127.0.0.1:6379 for P4; daemons and reference servers it starts on
free loopback ports, ended by pid).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench import common

Runner = Callable[[bool], common.Result]


def _p1(quick: bool) -> common.Result:
    from bench import p1_makespan

    return p1_makespan.run(quick)


def _p1ai(quick: bool) -> common.Result:
    from bench import p1_ai_job

    return p1_ai_job.run(quick)


def _p2(quick: bool) -> common.Result:
    from bench import p2_loop_lag

    return p2_loop_lag.run(quick)


def _p3(quick: bool) -> common.Result:
    from bench import p3_warmup_latency

    return p3_warmup_latency.run(quick)


def _p6(quick: bool) -> common.Result:
    from bench import p6_memory

    return p6_memory.run(quick)


def _p7(quick: bool) -> common.Result:
    from bench import p7_pack_throughput

    return p7_pack_throughput.run(quick)


def _p4(quick: bool) -> common.Result:
    from bench import p4_locks

    return p4_locks.run(quick)


def _p5(quick: bool) -> common.Result:
    from bench import p5_scheduler

    return p5_scheduler.run(quick)


def _p8(quick: bool) -> common.Result:
    from bench import p8_selection

    return p8_selection.run(quick)


def _p9(quick: bool) -> common.Result:
    from bench import forecast_eval

    started = time.perf_counter()
    code = forecast_eval.main(["--quick"] if quick else [])
    verdict = common.Verdict(
        target="P9",
        what="forecast quality (details printed above)",
        figure="see the table above",
        reference="seasonal naive, same cases",
        ratio=None,
        bound="MASE ratio ≤ 0.8, coverage 78–88 % / 90–97 %",
        met=code == 0,
    )
    return common.Result("p9_forecast", [verdict], wall_s=time.perf_counter() - started)


def _p10(quick: bool) -> common.Result:
    from bench import p10_dashboard

    return p10_dashboard.run(quick)


BENCHMARKS: dict[str, Runner] = {
    "p1": _p1,
    "p1ai": _p1ai,
    "p2": _p2,
    "p3": _p3,
    "p4": _p4,
    "p5": _p5,
    "p6": _p6,
    "p7": _p7,
    "p8": _p8,
    "p9": _p9,
    "p10": _p10,
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print one summary line per target; exit 1 when any target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    results = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        results.append(BENCHMARKS[name](args.quick))
    print(f"\n=== summary ({time.perf_counter() - started:.0f} s) ===")
    print(f"machine: {common.machine_line()}")
    verdicts = [v for r in results for v in r.verdicts]
    common.print_verdicts(verdicts)
    return 0 if all(v.met for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
