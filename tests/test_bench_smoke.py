"""Keep the benchmark scripts from rotting: each runs end to end at a tiny size.

No timing is asserted (benchmarks measure time; tests do not): only that each produces its verdicts
and raw figures and cleans up after itself.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bench import (
    common,
    loadgen,
    p1_ai_job,
    p1_makespan,
    p2_loop_lag,
    p3_warmup_latency,
    p4_locks,
    p5_scheduler,
    p6_memory,
    p7_pack_throughput,
    p8_selection,
    pg,
)
from bench.procs import BenchApp, BenchDaemon, http_raw, pool_workers
from tests.lock_support import require_redis
from tests.pg_support import require_postgres
from warmupd.config import parse_config


def test_percentile_and_describe() -> None:
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile([5], 99) == 5
    stats = common.describe([3.0, 1.0, 2.0])
    assert (stats["min"], stats["p50"], stats["max"], stats["n"]) == (1.0, 2.0, 3.0, 3)
    with pytest.raises(ValueError, match="no values"):
        common.percentile([], 50)


async def test_interleaved_alternates_order() -> None:
    calls: list[str] = []

    def variant(name: str) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            calls.append(name)
            return float(len(calls))

        return go

    out = await common.interleaved({"a": variant("a"), "b": variant("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}


async def test_p4_sqlite_smoke(tmp_path: Path) -> None:
    rates = await p4_locks.bench_sqlite(20, 2, tmp_path / "p4.db")
    assert set(rates) == {"warmupd", "bare"}
    assert all(len(v) == 2 and min(v) > 0 for v in rates.values())


async def test_p4_redis_smoke() -> None:
    require_redis()
    rates = await p4_locks.bench_redis(20, 2)
    assert set(rates) == {"warmupd", "redis-py"}
    assert all(len(v) == 2 and min(v) > 0 for v in rates.values())


@pytest.mark.postgres
async def test_p4_postgres_smoke() -> None:
    require_postgres()
    rates = await p4_locks.bench_postgres(20, 2)
    assert set(rates) == {"warmupd", "bare"}
    assert all(len(v) == 2 and min(v) > 0 for v in rates.values())


@pytest.mark.slow
async def test_p5_smoke(tmp_path: Path) -> None:
    samples = await p5_scheduler.measure(1.5, 1, tmp_path / "p5.db")
    # A 1.5 s window holds one or two whole seconds for each scheduler.
    assert 1 <= len(samples["warmupd"]) <= 2
    assert 1 <= len(samples["apscheduler"]) <= 2
    assert all(x >= 0 for x in samples["warmupd"])


async def test_p8_smoke(tmp_path: Path) -> None:
    path = tmp_path / "p8.db"
    async with p8_selection.SqliteDatabase(path):
        pass
    p8_selection.generate(path, 3_000)
    data = await p8_selection.measure(path, 2)
    assert data["forecasts"]["rows"] == 50
    assert data["insights"]["rows"] == 30
    assert data["insights_worst"]["rows"] == 0
    assert data["forecasts_worst"]["rows"] == 10
    assert any("comparisons_popularity" in line for line in data["plan_forecasts"])


def _database_exists(url: str) -> bool:
    name = url.rsplit("/", 1)[1]
    found = pg.run_async(lambda: pg.fetch_column(pg.ADMIN_URL, "SELECT datname FROM pg_database"))
    return name in found


@pytest.mark.slow
@pytest.mark.postgres
async def test_p8_postgres_smoke() -> None:
    require_postgres()
    with pg.fresh_database("smoke") as url:
        data = await p8_selection.measure_postgres(url, 3_000, 2)
        assert _database_exists(url)
    assert not _database_exists(url)  # dropped afterwards
    assert data["forecasts"]["rows"] == 50
    assert data["insights"]["rows"] == 30
    assert data["insights_worst"]["rows"] == 0
    assert data["forecasts_worst"]["rows"] == 10
    assert any("comparisons_popularity" in line for line in data["plan_forecasts"])


def test_p1_bounds() -> None:
    items = [0.3, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert p1_makespan.lower_bound(items, 2) == pytest.approx(0.4)
    # Sliding: the long item on one slot, the five short ones through the other → 0.4 (= bound);
    # batches of two wait for the long item first → 0.3 + 0.1 + 0.1.
    assert p1_makespan.ideal_sliding(items, 2) == pytest.approx(0.4)
    assert p1_makespan.ideal_batches(items, 2) == pytest.approx(0.5)
    scaled = p1_makespan.latencies(200, 0.05)
    assert len(scaled) == 200
    assert sum(scaled) / p1_makespan.CONCURRENCY == pytest.approx(0.05)


async def test_p1_runs_the_real_runner(tmp_path: Path) -> None:
    items = p1_makespan.latencies(20, 0.02)
    samples = await p1_makespan.measure(items, 1, tmp_path / "p1.db")
    assert samples["records"] == ["success/20"]
    assert len(samples["warmupd"]) == len(samples["fixed_batches"]) == 1


def test_wrk_script_quotes_and_builds_in_init() -> None:
    script = loadgen.wrk_script(
        [loadgen.Request("POST", "/p", (("X-A", "v]]x"),), '{"slug": "a"}')]
    )
    assert "[ [=[X-A]=] ] = [=[v]]x]=]" in script
    assert script.index("wrk.format") < script.index("function init")
    assert "build()" in script.split("function init", 1)[1]


def test_lag_bucket_quantile() -> None:
    def text(a: int, b: int, c: int) -> str:
        return (
            f'warmupd_event_loop_lag_seconds_bucket{{le="0.005"}} {a}\n'
            f'warmupd_event_loop_lag_seconds_bucket{{le="0.025"}} {b}\n'
            f'warmupd_event_loop_lag_seconds_bucket{{le="+Inf"}} {c}\n'
        )

    before = p2_loop_lag.lag_buckets(text(5, 5, 5))
    after = p2_loop_lag.lag_buckets(text(15, 24, 25))
    assert after == {0.005: 15.0, 0.025: 24.0, float("inf"): 25.0}
    assert p2_loop_lag.bucket_quantile(before, after, 0.5) == 0.005
    assert p2_loop_lag.bucket_quantile(before, after, 0.9) == 0.025
    assert p2_loop_lag.bucket_quantile(before, after, 0.99) == float("inf")


@pytest.mark.slow
def test_loadgen_aiohttp_against_bare_app(tmp_path: Path) -> None:
    with BenchApp(tmp_path, "bench.bare_app") as app:
        result = loadgen.run_load(
            app.url,
            [p3_warmup_latency._post("s", "a-b"), loadgen.Request("GET", "/healthz")],
            connections=4,
            duration_s=0.5,
            tool="aiohttp",
        )
    assert result["tool"] == "aiohttp"
    assert result["requests"] > 0
    assert result["non2xx"] == result["errors"] == 0
    assert app.proc is not None
    assert app.proc.poll() is not None


@pytest.mark.slow
def test_p3_daemon_smoke(tmp_path: Path) -> None:
    """One daemon: warm two comparisons, single flight for the cold one, a short ready-path load."""
    daemon = BenchDaemon(tmp_path / "d", {"daemon": {"pool_workers": 1}})
    daemon.demo_data(3)
    with daemon.start():
        daemon.run_job("warmup-forecasts", limit=2)
        daemon.run_job("warmup-ai-explanations", limit=2)
        warm, cold = p3_warmup_latency.classify(daemon)
        assert len(warm) == 2
        assert len(cold) == 1
        flight = p3_warmup_latency.single_flight(daemon, cold[0], 50)
        assert flight["exactly_one"], flight
        assert pool_workers(daemon.pid)
        ready = loadgen.run_load(
            daemon.url,
            [p3_warmup_latency._post(daemon.warmup_secret, s) for s in warm],
            connections=4,
            duration_s=0.5,
            tool="aiohttp",
        )
    assert ready["requests"] > 0
    assert ready["non2xx"] == ready["errors"] == 0


def test_p6_import_check_and_snapshot() -> None:
    chains = p6_memory.import_chains()
    assert set(chains) == {"chains", "loaded"}
    assert set(chains["chains"]) == set(chains["loaded"])
    snap = p6_memory.snapshot(os.getpid())
    assert snap["main"]["rss_mb"] > 0


@pytest.mark.slow
def test_p7_smoke(tmp_path: Path) -> None:
    data = p7_pack_throughput.measure(
        tmp_path, comparisons=2, duration_s=0.5, repetitions=1, tool="aiohttp"
    )
    assert data["slugs"] == 2
    assert data["body_bytes"] > 1000
    for name in ("warmupd", "bare"):
        (one,) = data["runs"][name]
        assert one["requests"] > 0
        assert one["non2xx"] == one["errors"] == 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_p7_postgres_smoke(tmp_path: Path) -> None:
    """The daemon with its state in a fresh PostgreSQL database, dropped afterwards."""
    require_postgres()
    require_redis()
    data = p7_pack_throughput.measure(
        tmp_path, comparisons=2, duration_s=0.5, repetitions=1, tool="aiohttp", backend="postgresql"
    )
    assert (data["backend"], data["slugs"]) == ("postgresql", 2)
    for name in ("warmupd", "bare"):
        (one,) = data["runs"][name]
        assert one["requests"] > 0
        assert one["non2xx"] == one["errors"] == 0
    left = pg.run_async(lambda: pg.fetch_column(pg.ADMIN_URL, "SELECT datname FROM pg_database"))
    assert not [n for n in left if str(n).startswith(f"warmupd_bench_p7_{os.getpid()}_")]


def test_p10_smoke() -> None:
    from bench import p10_dashboard

    result = p10_dashboard.run(True, rows=2_000, runs=300)
    (verdict,) = result.verdicts
    assert verdict.target == "P10"
    assert result.data["page_bytes"] > 10_000
    assert result.data["client_ms"]["n"] == 20


def test_client_limited_rejects_only_a_busy_generator_beside_an_unsaturated_server() -> None:
    assert loadgen.client_limited({"client_cores_per_thread": 0.95, "server_cores": 0.5})
    assert not loadgen.client_limited({"client_cores_per_thread": 0.95, "server_cores": 0.97})
    assert not loadgen.client_limited({"client_cores_per_thread": 0.3, "server_cores": 0.5})
    runs = [
        {"client_cores_per_thread": 0.2, "server_cores": 0.9, "client_limited": False},
        {"client_cores_per_thread": 0.95, "server_cores": 0.4, "client_limited": True},
    ]
    line, rejected = loadgen.cpu_note(runs)
    assert rejected
    assert "REJECTED" in line


@pytest.mark.slow
def test_strict_reference_serves_the_given_bytes_and_cpu_is_recorded(tmp_path: Path) -> None:
    pack = '{"slug": "a-b", "terms": ["a", "b"], "insights": {"x":1}}'
    (tmp_path / "packs.json").write_text(json.dumps({"a-b": pack}), encoding="utf-8")
    (tmp_path / "ready.json").write_bytes(b'{"slug": "a-b", "status": "ready"}')
    args = ("--packs", str(tmp_path / "packs.json"), "--warmup", str(tmp_path / "ready.json"))
    with BenchApp(tmp_path, "bench.bare_app", *args) as app:
        assert http_raw(app.url + "/api/comparison/a-b") == (200, pack.encode())
        assert http_raw(app.url + "/api/comparison/warmup", "POST", b'{"slug": "a-b"}') == (
            200,
            b'{"slug": "a-b", "status": "ready"}',
        )
        assert http_raw(app.url + "/api/comparison/nope")[0] == 404
        result = loadgen.run_load(
            app.url,
            [loadgen.Request("GET", "/api/comparison/a-b")],
            connections=2,
            duration_s=0.5,
            tool="aiohttp",
            server_pid=app.pid,
        )
    assert result["non2xx"] == result["errors"] == 0
    assert result["server_cpu_s"] > 0
    assert result["client_cpu_s"] > 0
    assert result["client_limited"] in (True, False)


@pytest.mark.slow
def test_fake_model_draws_each_prompt_its_delay_and_batches_run(tmp_path: Path) -> None:
    (tmp_path / "delays.json").write_text("[0.01, 0.02, 0.03, 0.04]", encoding="utf-8")
    with BenchApp(tmp_path, "bench.fake_model", "--delays", str(tmp_path / "delays.json")) as model:
        seconds = asyncio.run(p1_ai_job._batches(model.url, 4, 2))
        stats = p1_ai_job.model_stats(model, reset=True)
        assert seconds > 0
        assert stats["requests"] == 4
        assert stats["delays_used_s"] == [0.01, 0.02, 0.03, 0.04]
        assert stats["peak_in_flight"] == 2
        assert p1_ai_job.model_stats(model)["requests"] == 0


def test_p1_ai_job_config_and_schedule() -> None:
    cfg = parse_config(
        p1_ai_job.daemon_config("http://127.0.0.1:9", 10, p1_ai_job.cron_at(1_767_225_605.0)),
        env={},
    )
    job = cfg.jobs[p1_ai_job.JOB]
    assert (job.concurrency, job.limit, job.schedule) == (5, 10, "5 0 0 1 1 *")
    assert cfg.ai.provider == "openai"
    assert cfg.ai.max_in_flight is None  # no global cap: the run's concurrency bounds the calls
