"""Metrics: the text exposition parsed back, validated by promtool, and the loop-lag monitor."""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import time

import pytest

from warmupd.clock import SystemClock
from warmupd.metrics import CONTENT_TYPE, Metrics, loop_lag_monitor, measure_loop_lag
from warmupd.models import RunStatus
from warmupd.promtext import Registry

Sample = tuple[str, tuple[tuple[str, str], ...], float]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """A strict little parser of the text format: (help by name, type by name, samples)."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            helps[name] = _unescape(doc)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, line
            labels: list[tuple[str, str]] = []
            raw = m.group(2) or ""
            pos = 0
            while pos < len(raw):
                lm = _LABEL.match(raw, pos)
                assert lm, raw[pos:]
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
            samples.append((m.group(1), tuple(labels), float(m.group(3))))
    return helps, types, samples


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    found = [v for n, ls, v in samples if n == name and tuple(sorted(ls)) == want]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_counter_gauge_histogram_roundtrip() -> None:
    reg = Registry()
    c = reg.counter("t_requests_total", "Requests.\nSecond line \\ here.", ("route", "code"))
    g = reg.gauge("t_depth", "Depth.")
    h = reg.histogram("t_latency_seconds", "Latency.", ("route",), buckets=(0.1, 1, 0.5))
    c.inc(route="/a", code="200")
    c.inc(2.5, route="/a", code="200")
    c.labels(route='/b "q"\\\n', code="500").inc()
    g.set(3)
    g.inc(2)
    g.dec(0.5)
    for v in (0.05, 0.1, 0.3, 0.7, 5.0):
        h.observe(v, route="/a")

    text = reg.render()
    helps, types, samples = parse(text)
    assert helps["t_requests_total"] == "Requests.\nSecond line \\ here."
    assert types == {
        "t_requests_total": "counter",
        "t_depth": "gauge",
        "t_latency_seconds": "histogram",
    }
    assert value_of(samples, "t_requests_total", route="/a", code="200") == 3.5
    assert value_of(samples, "t_requests_total", route='/b "q"\\\n', code="500") == 1
    assert value_of(samples, "t_depth") == 4.5
    buckets = {ls[-1][1]: v for n, ls, v in samples if n == "t_latency_seconds_bucket"}
    # Cumulative, "less than or equal": 0.1 lands in le=0.1.
    assert buckets == {"0.1": 2, "0.5": 3, "1.0": 4, "+Inf": 5}
    assert [k for n, ls, _ in samples if n == "t_latency_seconds_bucket" for k, _ in ls[:1]] == [
        "route"
    ] * 4
    assert value_of(samples, "t_latency_seconds_count", route="/a") == 5
    assert math.isclose(value_of(samples, "t_latency_seconds_sum", route="/a"), 6.15)
    # Declaration order of families, HELP before TYPE before samples.
    assert text.splitlines()[0] == "# HELP t_requests_total Requests.\\nSecond line \\\\ here."
    assert text.splitlines()[1] == "# TYPE t_requests_total counter"
    assert c.value(route="/a", code="200") == 3.5
    assert c.value(route="/zzz", code="200") == 0


def test_special_values_render_as_prometheus_floats() -> None:
    reg = Registry()
    g = reg.gauge("t_g", "G.", ("k",))
    g.set(math.inf, k="a")
    g.set(-math.inf, k="b")
    g.set(math.nan, k="c")
    g.set(1e-7, k="d")
    lines = reg.render().splitlines()[2:]
    assert lines == ['t_g{k="a"} +Inf', 't_g{k="b"} -Inf', 't_g{k="c"} NaN', 't_g{k="d"} 1e-07']


def test_gauge_functions_replace_and_remove() -> None:
    reg = Registry()
    g = reg.gauge("t_entries", "E.", ("kind", "state"))
    depth = reg.gauge("t_queue", "Q.")
    queue: asyncio.Queue[int] = asyncio.Queue()
    depth.set_function(queue.qsize)
    queue.put_nowait(1)
    queue.put_nowait(2)
    g.set(9, kind="old", state="fresh")
    g.replace({("forecast", "fresh"): 4, ("forecast", "stale"): 1})
    _, _, samples = parse(reg.render())
    assert value_of(samples, "t_queue") == 2
    assert {(ls, v) for n, ls, v in samples if n == "t_entries"} == {
        ((("kind", "forecast"), ("state", "fresh")), 4),
        ((("kind", "forecast"), ("state", "stale")), 1),
    }
    assert g.value(kind="old", state="fresh") is None
    depth.set(7)  # a direct set replaces the function
    queue.put_nowait(3)
    assert depth.value() == 7
    g.remove(kind="forecast", state="stale")
    g.clear()
    assert [n for n, _, _ in parse(reg.render())[2]] == ["t_queue"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r.counter("bad name_total", "x"), "invalid metric name"),
        (lambda r: r.counter("t_count", "x"), "must end in _total"),
        (lambda r: r.gauge("t_g", "x", ("le",)), "invalid label name"),
        (lambda r: r.gauge("t_g", "x", ("__x",)), "invalid label name"),
        (lambda r: r.gauge("t_g", "x", ("a-b",)), "invalid label name"),
        (lambda r: r.histogram("t_h", "x", buckets=()), "buckets"),
        (lambda r: r.histogram("t_h", "x", buckets=(1, 1)), "buckets"),
    ],
)
def test_invalid_declarations(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(Registry())  # type: ignore[operator]


def test_misuse_is_rejected() -> None:
    reg = Registry()
    c = reg.counter("t_total", "x", ("a",))
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("t_total", "y")
    with pytest.raises(ValueError, match="takes labels"):
        c.inc(b="1")
    with pytest.raises(ValueError, match="takes labels"):
        c.inc()
    with pytest.raises(ValueError, match="cannot decrease"):
        c.inc(-1, a="x")
    g = reg.gauge("t_g", "x", ("a", "b"))
    with pytest.raises(ValueError, match="takes labels"):
        g.replace({("only-one",): 1})


async def test_scrape_hooks_run_before_collect() -> None:
    reg = Registry()
    g = reg.gauge("t_cache", "C.", ("state",))
    calls: list[str] = []

    def sync_hook() -> None:
        calls.append("sync")

    async def async_hook() -> None:
        await asyncio.sleep(0)
        calls.append("async")
        g.replace({("fresh",): len(calls)})

    reg.add_scrape_hook(sync_hook)
    reg.add_scrape_hook(async_hook)
    assert reg.render().count("t_cache{") == 0  # render() alone runs no hooks
    text = await reg.collect()
    assert calls == ["sync", "async"]
    assert value_of(parse(text)[2], "t_cache", state="fresh") == 2


SPEC_METRICS = {
    "warmupd_job_runs_total": ("counter", {"job_name", "status"}),
    "warmupd_job_duration_seconds": ("histogram", {"job_name"}),
    "warmupd_job_items_total": ("counter", {"job_name", "result"}),
    "warmupd_job_last_success_timestamp_seconds": ("gauge", {"job_name"}),
    "warmupd_job_running": ("gauge", {"job_name"}),
    "warmupd_scheduler_next_run_timestamp_seconds": ("gauge", {"job_name"}),
    "warmupd_scheduler_lateness_seconds": ("histogram", {"job_name"}),
    "warmupd_lock_acquisitions_total": ("counter", {"backend", "result"}),
    "warmupd_on_demand_requests_total": ("counter", {"result"}),
    "warmupd_on_demand_queue_depth": ("gauge", set()),
    "warmupd_cache_entries": ("gauge", {"kind", "state"}),
    "warmupd_http_requests_total": ("counter", {"route", "code"}),
    "warmupd_http_request_duration_seconds": ("histogram", {"route"}),
    "warmupd_event_loop_lag_seconds": ("histogram", set()),
    "warmupd_redis_up": ("gauge", set()),
    "warmupd_database_up": ("gauge", set()),
}


def _exercise(m: Metrics) -> None:
    """Touch every metric once, the way the daemon would after one job run."""
    m.declare_job("warmup-forecasts")
    m.declare_job("housekeeping")
    m.run_started("warmup-forecasts")
    m.run_finished(
        "warmup-forecasts",
        RunStatus.SUCCESS,
        duration_s=12.5,
        processed=40,
        skipped=8,
        failed=2,
        finished_ms=1_795_000_000_123,
    )
    m.run_finished(
        "housekeeping", "skipped", duration_s=0.0, processed=0, skipped=0, failed=0, finished_ms=1
    )
    m.scheduler_next_run.set(1_795_100_000, job_name="warmup-forecasts")
    m.scheduler_lateness.observe(0.004, job_name="warmup-forecasts")
    m.lock_acquisitions.inc(backend="sqlite", result="acquired")
    m.on_demand_requests.inc(result="queued")
    m.cache_entries.replace({("forecast", "fresh"): 80, ("insights", "stale"): 3})
    m.http_requests.inc(route="/api/comparison/{slug}", code="200")
    m.http_request_duration.observe(0.0031, route="/api/comparison/{slug}")
    m.event_loop_lag.observe(0.0002)
    m.redis_up.set(1)
    m.database_up.set(1)


def test_metrics_declares_exactly_the_spec_metrics() -> None:
    m = Metrics()
    _exercise(m)
    helps, types, samples = parse(m.render())
    assert types == {name: kind for name, (kind, _) in SPEC_METRICS.items()}
    assert all(helps[name] for name in SPEC_METRICS)
    for name, (kind, labels) in SPEC_METRICS.items():
        names = (
            [f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name]
        )
        for sample_name in names:
            found = [ls for n, ls, _ in samples if n == sample_name]
            assert found, sample_name
            extra = {"le"} if sample_name.endswith("_bucket") else set()
            assert all({k for k, _ in ls} == labels | extra for ls in found), sample_name

    assert (
        value_of(samples, "warmupd_job_runs_total", job_name="warmup-forecasts", status="success")
        == 1
    )
    assert (
        value_of(samples, "warmupd_job_runs_total", job_name="warmup-forecasts", status="failed")
        == 0
    )
    assert (
        value_of(samples, "warmupd_job_runs_total", job_name="housekeeping", status="skipped") == 1
    )
    assert (
        value_of(samples, "warmupd_job_items_total", job_name="warmup-forecasts", result="failed")
        == 2
    )
    assert value_of(
        samples, "warmupd_job_last_success_timestamp_seconds", job_name="warmup-forecasts"
    ) == pytest.approx(1_795_000_000.123)
    assert value_of(samples, "warmupd_job_running", job_name="warmup-forecasts") == 0
    # the skipped housekeeping run did no work: no duration observed, no last success
    assert value_of(samples, "warmupd_job_duration_seconds_count", job_name="housekeeping") == 0
    assert [ls for n, ls, _ in samples if n == "warmupd_job_last_success_timestamp_seconds"] == [
        (("job_name", "warmup-forecasts"),)
    ]
    assert value_of(samples, "warmupd_on_demand_queue_depth") == 0
    assert "status" not in str([ls for n, ls, _ in samples if n == "warmupd_job_running"])
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_fresh_metrics_expose_no_redis_sample_and_forget_job_drops_series() -> None:
    m = Metrics()
    _, _, samples = parse(m.render())
    assert [n for n, _, _ in samples] == ["warmupd_on_demand_queue_depth"]
    _exercise(m)
    m.forget_job("warmup-forecasts")
    assert 'job_name="warmup-forecasts"' not in m.render()
    assert 'job_name="housekeeping"' in m.render()


def _promtool() -> str | None:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package 'prometheus')")
        pytest.skip("promtool not installed")
    return path


async def test_promtool_accepts_the_exposition() -> None:
    promtool = _promtool()
    assert promtool is not None
    m = Metrics()
    _exercise(m)
    m.http_requests.inc(route='/weird "route"\\\nx', code="404")
    m.add_scrape_hook(lambda: None)
    text = await m.collect()
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_promtool_catches_a_broken_exposition() -> None:
    # Proves the check above can fail: the same tool rejects a counter without HELP.
    promtool = _promtool()
    assert promtool is not None
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=b"x_total 1\n", capture_output=True, timeout=30
    )
    assert proc.returncode != 0


class LaggyClock:
    """A fake clock whose sleeps overshoot by scripted lags, then stop the loop."""

    def __init__(self, lags: list[float]) -> None:
        self.now = 50.0
        self.lags = lags
        self.requested: list[float] = []

    def wall_ms(self) -> int:
        return int(self.now * 1000)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.lags:
            raise asyncio.CancelledError
        self.requested.append(seconds)
        self.now += seconds + self.lags.pop(0)


async def test_loop_lag_monitor_observes_the_overshoot() -> None:
    m = Metrics()
    clock = LaggyClock([0.0, 0.003, 0.2, 1.5])
    with pytest.raises(asyncio.CancelledError):
        await loop_lag_monitor(m, clock, interval_s=0.25)
    assert clock.requested == [0.25] * 4
    _, _, samples = parse(m.render())
    assert value_of(samples, "warmupd_event_loop_lag_seconds_count") == 4
    assert value_of(samples, "warmupd_event_loop_lag_seconds_sum") == pytest.approx(1.703, abs=1e-9)
    assert value_of(samples, "warmupd_event_loop_lag_seconds_bucket", le="0.001") == 1
    assert value_of(samples, "warmupd_event_loop_lag_seconds_bucket", le="0.25") == 3
    assert value_of(samples, "warmupd_event_loop_lag_seconds_bucket", le="1.0") == 3


async def test_real_loop_lag_sees_a_blocking_call() -> None:
    # Only a lower bound is asserted: blocking the loop for 50 ms delays the wake-up by at least
    # that much, however slow the machine is.
    async def block_the_loop() -> None:
        time.sleep(0.05)  # deliberately blocking

    measuring = asyncio.create_task(measure_loop_lag(SystemClock(), 0.001))
    await asyncio.sleep(0)  # let the measurement start sleeping
    await block_the_loop()
    assert await measuring >= 0.04
