"""The metrics warmupd exports (SPEC §11) and the event-loop lag monitor.

:class:`Metrics` declares every metric with its exact name and labels on a private
:class:`~warmupd.promtext.Registry` (never a process-global one, so tests and several daemons in one
process do not share counters). Components receive the :class:`Metrics` instance and update the
attribute they own; the ``/metrics`` handler answers ``await metrics.collect()`` with
:data:`CONTENT_TYPE`.

Series appear when first touched. The daemon calls :meth:`Metrics.declare_job` for each configured
job so that its series exist at zero from start-up (``rate()`` and absence alerts need that), and it
sets ``warmupd_redis_up`` only when Redis is configured, so an alert on ``== 0`` never fires on a
host that does not use Redis. ``warmupd_database_up`` is always exported (the state database is
never optional): 0 while start-up waits for PostgreSQL and while it is lost (SPEC §14).
"""

from __future__ import annotations

from warmupd.clock import Clock
from warmupd.models import RunStatus
from warmupd.promtext import CONTENT_TYPE, Counter, Gauge, Histogram, Registry, ScrapeHook

__all__ = ["CONTENT_TYPE", "Metrics", "loop_lag_monitor", "measure_loop_lag"]

# Jobs take seconds to hours (max_duration defaults are 1 h and 2 h).
JOB_DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# A healthy fire is milliseconds late; a start-up misfire run can be hours late (misfire_grace).
LATENESS_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 3600, 21600, 86400)
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# SPEC §1 allows ~10 ms of blocking; the buckets resolve around that limit.
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

ITEM_RESULTS = ("processed", "skipped", "failed")
"""The ``result`` label values of ``warmupd_job_items_total`` (the run record's three counts)."""

_FINAL_STATUSES = tuple(s.value for s in RunStatus if s is not RunStatus.RUNNING)


class Metrics:
    """Every metric of SPEC §11, on its own registry.

    Attribute → metric:

    - ``job_runs`` → ``warmupd_job_runs_total{job_name,status}``
    - ``job_duration`` → ``warmupd_job_duration_seconds{job_name}`` (histogram)
    - ``job_items`` → ``warmupd_job_items_total{job_name,result}``
    - ``job_last_success`` → ``warmupd_job_last_success_timestamp_seconds{job_name}``
    - ``job_running`` → ``warmupd_job_running{job_name}``
    - ``scheduler_next_run`` → ``warmupd_scheduler_next_run_timestamp_seconds{job_name}``
    - ``scheduler_lateness`` → ``warmupd_scheduler_lateness_seconds{job_name}`` (histogram)
    - ``lock_acquisitions`` → ``warmupd_lock_acquisitions_total{backend,result}``
    - ``on_demand_requests`` → ``warmupd_on_demand_requests_total{result}``
    - ``on_demand_queue_depth`` → ``warmupd_on_demand_queue_depth``
    - ``cache_entries`` → ``warmupd_cache_entries{kind,state}``
    - ``http_requests`` → ``warmupd_http_requests_total{route,code}``
    - ``http_request_duration`` → ``warmupd_http_request_duration_seconds{route}`` (histogram)
    - ``event_loop_lag`` → ``warmupd_event_loop_lag_seconds`` (histogram)
    - ``redis_up`` → ``warmupd_redis_up``
    - ``database_up`` → ``warmupd_database_up``

    ``route`` is the matched route template (``/api/comparison/{slug}``), never the raw path, so
    label cardinality stays bounded.
    """

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.job_runs: Counter = r.counter(
            "warmupd_job_runs_total", "Finished job runs by final status.", ("job_name", "status")
        )
        self.job_duration: Histogram = r.histogram(
            "warmupd_job_duration_seconds",
            "Wall time of job runs that started work (skipped runs excluded).",
            ("job_name",),
            buckets=JOB_DURATION_BUCKETS_S,
        )
        self.job_items: Counter = r.counter(
            "warmupd_job_items_total",
            "Items handled by job runs, by result.",
            ("job_name", "result"),
        )
        self.job_last_success: Gauge = r.gauge(
            "warmupd_job_last_success_timestamp_seconds",
            "Unix time at which the last successful run of the job finished.",
            ("job_name",),
        )
        self.job_running: Gauge = r.gauge(
            "warmupd_job_running", "1 while a run of the job is in progress here.", ("job_name",)
        )
        self.scheduler_next_run: Gauge = r.gauge(
            "warmupd_scheduler_next_run_timestamp_seconds",
            "Unix time of the job's next scheduled fire.",
            ("job_name",),
        )
        self.scheduler_lateness: Histogram = r.histogram(
            "warmupd_scheduler_lateness_seconds",
            "Actual start minus due time of scheduled fires.",
            ("job_name",),
            buckets=LATENESS_BUCKETS_S,
        )
        self.lock_acquisitions: Counter = r.counter(
            "warmupd_lock_acquisitions_total",
            "Lock acquisition attempts by backend and outcome.",
            ("backend", "result"),
        )
        self.on_demand_requests: Counter = r.counter(
            "warmupd_on_demand_requests_total", "On-demand warmup requests by outcome.", ("result",)
        )
        self.on_demand_queue_depth: Gauge = r.gauge(
            "warmupd_on_demand_queue_depth", "On-demand warmups waiting for a slot."
        )
        self.cache_entries: Gauge = r.gauge(
            "warmupd_cache_entries", "Cache entries by kind and freshness state.", ("kind", "state")
        )
        self.http_requests: Counter = r.counter(
            "warmupd_http_requests_total",
            "HTTP responses by route and status code.",
            ("route", "code"),
        )
        self.http_request_duration: Histogram = r.histogram(
            "warmupd_http_request_duration_seconds",
            "HTTP request handling time by route.",
            ("route",),
            buckets=HTTP_BUCKETS_S,
        )
        self.event_loop_lag: Histogram = r.histogram(
            "warmupd_event_loop_lag_seconds",
            "How late the event loop woke a sleeping task (blocking on the loop shows here).",
            buckets=LOOP_LAG_BUCKETS_S,
        )
        self.redis_up: Gauge = r.gauge(
            "warmupd_redis_up", "1 when the configured Redis answers, 0 when it does not."
        )
        self.database_up: Gauge = r.gauge(
            "warmupd_database_up",
            "1 when the state database (SQLite file or PostgreSQL) answers, 0 when it does not.",
        )
        self.on_demand_queue_depth.set(0)

    def declare_job(self, job_name: str) -> None:
        """Create the per-job series at zero (idempotent; existing values are kept)."""
        for status in _FINAL_STATUSES:
            self.job_runs.labels(job_name=job_name, status=status)
        for result in ITEM_RESULTS:
            self.job_items.labels(job_name=job_name, result=result)
        self.job_duration.labels(job_name=job_name)
        self.scheduler_lateness.labels(job_name=job_name)
        self.job_running.labels(job_name=job_name)

    def forget_job(self, job_name: str) -> None:
        """Drop the series of a job that a reload removed (its counters would otherwise linger)."""
        for status in _FINAL_STATUSES:
            self.job_runs.remove(job_name=job_name, status=status)
        for result in ITEM_RESULTS:
            self.job_items.remove(job_name=job_name, result=result)
        for family in (
            self.job_duration,
            self.scheduler_lateness,
            self.job_running,
            self.job_last_success,
            self.scheduler_next_run,
        ):
            family.remove(job_name=job_name)

    def run_started(self, job_name: str) -> None:
        """A run of ``job_name`` began work (after its lock was acquired)."""
        self.job_running.set(1, job_name=job_name)

    def run_finished(
        self,
        job_name: str,
        status: RunStatus | str,
        *,
        duration_s: float,
        processed: int,
        skipped: int,
        failed: int,
        finished_ms: int,
    ) -> None:
        """Record a finished run: status counter, duration, item counts, last success, running=0.

        A ``skipped`` run did no work, so its duration is not observed (it would drag the
        distribution towards zero).
        """
        status = str(status)
        self.job_runs.inc(job_name=job_name, status=status)
        if status != RunStatus.SKIPPED:
            self.job_duration.observe(duration_s, job_name=job_name)
        for result, count in zip(ITEM_RESULTS, (processed, skipped, failed), strict=True):
            self.job_items.inc(count, job_name=job_name, result=result)
        if status == RunStatus.SUCCESS:
            self.job_last_success.set(finished_ms / 1000, job_name=job_name)
        self.job_running.set(0, job_name=job_name)

    def add_scrape_hook(self, hook: ScrapeHook) -> None:
        """See :meth:`Registry.add_scrape_hook` (e.g. recount cache entries by kind and state)."""
        self.registry.add_scrape_hook(hook)

    def render(self) -> str:
        """The exposition text without running scrape hooks."""
        return self.registry.render()

    async def collect(self) -> str:
        """Run the scrape hooks, then render: the body of ``GET /metrics``."""
        return await self.registry.collect()


async def measure_loop_lag(clock: Clock, interval_s: float) -> float:
    """Sleep ``interval_s`` and return how much later than that the loop woke us (≥ 0 seconds).

    The one step of :func:`loop_lag_monitor`. Anything that holds the loop — a blocking call, a long
    synchronous computation — delays this wake-up by the same amount.
    """
    started = clock.monotonic()
    await clock.sleep(interval_s)
    return max(0.0, clock.monotonic() - started - interval_s)


async def loop_lag_monitor(metrics: Metrics, clock: Clock, interval_s: float = 0.25) -> None:
    """Observe the event-loop lag into ``warmupd_event_loop_lag_seconds`` until cancelled."""
    while True:
        metrics.event_loop_lag.observe(await measure_loop_lag(clock, interval_s))
