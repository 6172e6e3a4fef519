"""On-demand warmup of one comparison (``warmup-on-demand``, SPEC §6).

The request path does no compute: it checks the comparison's current dataHash and its parts'
freshness, then either answers ``ready`` or hands the work to a background task and answers
``queued``/``running`` at once. Concurrent requests for one ``slug+dataHash`` share one task
(single-flight inside the process); the lock ``warmup:on-demand:{slug}:{dataHash}`` makes it
single-flight across processes — for a fleet on one PostgreSQL state, across hosts (SPEC §14). At
most ``on_demand.concurrency`` warmups compute at once and at most ``on_demand.max_queued`` wait.

A process that finds the lock held elsewhere records nothing: it *follows* that warmup (its flight
answers ``running``) and checks every :data:`FOLLOW_POLL_S` whether the parts became up to date; if
the holder died instead, the lock frees within a lease and this process takes the warmup over. Every
holder checks the parts once more right after taking the lock, so a warmup finished by another
process between a request's read and the lock is neither computed nor recorded again: one
computation, one model call, one run record per warmup for the whole fleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmupd.clock import Clock
from warmupd.config import JOB_ON_DEMAND, Config
from warmupd.errors import DatabaseUnavailable, NotFound, QueueFull, StaleDataHash, WarmupdError
from warmupd.jobs.base import Fencing, ItemResult
from warmupd.jobs.parts import PARTS, Warmer
from warmupd.jobs.slots import Slots
from warmupd.locks import Locks, renewing
from warmupd.logs import get_logger, outcome_level
from warmupd.metrics import Metrics
from warmupd.models import Acquired, Comparison, Held, RunStatus, Trigger, WarmupState
from warmupd.promtext import CounterChild
from warmupd.state.runs import RunStore
from warmupd.state.store import ComparisonStore, WarmupStore

log = get_logger("warmupd.ondemand")

# Background tasks are anchored here: the loop keeps only weak references.
_Key = tuple[str, str]

FOLLOW_POLL_S = 0.5
"""How often a warmup held by another process is checked: are its parts up to date, is its lock free."""


@dataclass(eq=False)
class _Flight:
    slug: str
    data_hash: str
    state: WarmupState = WarmupState.QUEUED
    task: asyncio.Task[None] | None = None
    elsewhere: bool = False
    """Another process holds the lock and computes it; this flight follows (records nothing)."""
    followed_since_ms: int | None = None
    """When this flight first found the warmup held elsewhere."""


class OnDemand:
    """Fire-and-forget warmups with single-flight, a concurrency limit and a bounded queue."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        comparisons: ComparisonStore,
        warmups: WarmupStore,
        runs: RunStore,
        warmer: Warmer,
        locks: Locks,
        clock: Clock,
        node: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self.comparisons = comparisons
        self.warmups = warmups
        self.runs = runs
        self.warmer = warmer
        self.locks = locks
        self.clock = clock
        self.node = node
        self.metrics = metrics
        self._flights: dict[_Key, _Flight] = {}
        self._slots = Slots(config().on_demand.concurrency)
        self._accepting = True
        self._series: dict[str, CounterChild] = {}
        self.computations = 0
        """How many warmups actually computed something (the single-flight benchmark reads it)."""

    def set_concurrency(self, concurrency: int) -> None:
        """Apply a reloaded ``on_demand.concurrency``: waiting warmups start at once if it grew;
        if it shrank, running ones finish and no new one starts until fewer are running."""
        self._slots.resize(concurrency)

    # ----------------------------------------------------------------- request path

    def in_flight(self) -> int:
        """Warmups computing now in this process (not those it follows on another process)."""
        return sum(
            1 for f in self._flights.values() if f.state is WarmupState.RUNNING and not f.elsewhere
        )

    def queued(self) -> int:
        """Warmups waiting for a slot."""
        return sum(1 for f in self._flights.values() if f.state is WarmupState.QUEUED)

    def flight_state(self, slug: str, data_hash: str) -> WarmupState | None:
        """The state of this process's warmup of ``slug`` at ``data_hash``, if one is in flight."""
        flight = self._flights.get((slug, data_hash))
        return flight.state if flight else None

    async def request(self, slug: str, data_hash: str | None) -> dict[str, Any]:
        """Answer at once: ``ready``, or the state of the (possibly shared) background warmup.

        :raises NotFound: unknown slug.
        :raises StaleDataHash: ``data_hash`` is given and is not the current one.
        :raises QueueFull: ``on_demand.max_queued`` warmups are already waiting.
        """
        # One round trip (or none: a snapshot in memory) answers everything below: the current
        # dataHash and the parts' states.
        read = self.warmer.kept(slug)
        if read is None:
            read = await self.warmer.snapshot(slug)
        if read is None:
            raise NotFound(f"unknown comparison {slug!r}")
        current_hash = read.head.data_hash
        if data_hash is not None and data_hash != current_hash:
            # The joined read may predate a write another process committed just before this call
            # (the client saw the new dataHash): ask once more with a statement of our own.
            read = await self.warmer.snapshot(slug, join=False)
            if read is None:
                raise NotFound(f"unknown comparison {slug!r}")
            current_hash = read.head.data_hash
        if data_hash is not None and data_hash != current_hash:
            self._count("stale_data_hash")
            raise StaleDataHash(slug, data_hash, current_hash)
        flight = self._flights.get((slug, current_hash))
        if flight is None:
            if self.warmer.up_to_date(read, self.clock.wall_ms()):
                self._count("ready")
                return self._answer(slug, current_hash, WarmupState.READY)
            flight = self.schedule(slug, current_hash)
        else:
            self._count("joined")
        return self._answer(slug, current_hash, flight.state)

    def schedule(self, slug: str, data_hash: str) -> _Flight:
        """Start (or join) the background warmup of ``slug`` at ``data_hash`` without any I/O.

        :raises QueueFull: when ``on_demand.max_queued`` warmups are already waiting.
        """
        key = (slug, data_hash)
        flight = self._flights.get(key)
        if flight is not None:
            return flight
        if not self._accepting:
            raise QueueFull("warmupd is shutting down", retry_after_s=30)
        if self.queued() >= self._config().on_demand.max_queued:
            self._count("queue_full")
            raise QueueFull(
                f"on-demand queue is full ({self._config().on_demand.max_queued} waiting)",
                retry_after_s=5,
            )
        flight = self._flights[key] = _Flight(slug, data_hash)
        self.warmer.start_cpu()  # the pool's workers start while the warmup waits for its lock
        flight.task = asyncio.create_task(self._run(flight), name=f"warmup:{slug}")
        self._count("queued")
        self._publish_depth()
        return flight

    def _answer(self, slug: str, data_hash: str, state: WarmupState) -> dict[str, Any]:
        return {
            "slug": slug,
            "dataHash": data_hash,
            "status": state.value,
            "statusUrl": f"/api/comparison/{slug}/status",
        }

    def _count(self, result: str) -> None:
        if self.metrics:
            series = self._series.get(result)
            if series is None:
                series = self._series[result] = self.metrics.on_demand_requests.labels(
                    result=result
                )
            series.inc()

    def _publish_depth(self) -> None:
        if self.metrics:
            self.metrics.on_demand_queue_depth.set(self.queued())

    # ----------------------------------------------------------------- background

    async def _run(self, flight: _Flight) -> None:
        key = (flight.slug, flight.data_hash)
        try:
            # Never over another process's "running": that warmup is the one the client polls.
            await self.warmups.set(
                flight.slug,
                flight.data_hash,
                WarmupState.QUEUED,
                self.clock.wall_ms(),
                keep_running=True,
            )
            while True:
                async with self._slots:
                    if not self._accepting:
                        raise asyncio.CancelledError  # noqa: TRY301 - stopping: a queued warmup does not start
                    flight.state, flight.elsewhere = WarmupState.RUNNING, False
                    self._publish_depth()
                    if not await self._compute(flight):
                        return
                # Held elsewhere: follow that warmup outside the slot, which is for computing.
                flight.elsewhere = True
                if flight.followed_since_ms is None:
                    flight.followed_since_ms = self.clock.wall_ms()
                await self.clock.sleep(FOLLOW_POLL_S)
                if not self._accepting:
                    raise asyncio.CancelledError  # noqa: TRY301 - stopping: stop following too
                if await self._settled(flight):
                    return
        except asyncio.CancelledError:
            if not flight.elsewhere:  # a follower leaves the holder's status row alone
                await asyncio.shield(
                    self.warmups.set(
                        flight.slug,
                        flight.data_hash,
                        WarmupState.FAILED,
                        self.clock.wall_ms(),
                        error="cancelled (shutdown)",
                        keep_running=True,
                    )
                )
            raise
        except DatabaseUnavailable as exc:  # its record could not be written: no bug to trace
            log.warning("ondemand.database_unavailable", slug=flight.slug, error=exc.message)
        except Exception:
            log.exception("ondemand.error", slug=flight.slug)
        finally:
            self._flights.pop(key, None)
            self._publish_depth()

    async def _settled(self, flight: _Flight) -> bool:
        """Whether a followed warmup needs nothing more from this process: its parts are up to
        date, the comparison has moved on to another dataHash (a new request warms that), or the
        holder's warmup failed while followed (the status row says so; a new request retries —
        each follower retrying it would make one failure N computations in a fleet of N)."""
        read = await self.warmer.snapshot(flight.slug)
        if (
            read is None
            or read.head.data_hash != flight.data_hash
            or self.warmer.up_to_date(read, self.clock.wall_ms())
        ):
            return True
        row = await self.warmups.get(flight.slug, flight.data_hash)
        since = flight.followed_since_ms
        return (
            row is not None
            and since is not None
            and row.status is WarmupState.FAILED
            and row.updated_at_ms >= since
        )

    async def _compute(self, flight: _Flight) -> bool:
        """Take the lock and warm; True when another process holds it (nothing was recorded)."""
        cfg = self._config()
        slug, data_hash = flight.slug, flight.data_hash
        lock_key = f"warmup:on-demand:{slug}:{data_hash}"
        started = self.clock.monotonic()
        result = await self.locks.acquire(lock_key, cfg.locks.lease_ms)
        now = self.clock.wall_ms()
        if isinstance(result, Held):
            # Another process is warming exactly this; it keeps the shared status row and the
            # run log current. Recording a skipped run here would log one per request wave per
            # process (SPEC §14: one run record per warmup).
            return True
        if not isinstance(result, Acquired):
            await self.warmups.set(
                slug, data_hash, WarmupState.FAILED, now, error="lock backend unavailable"
            )
            return False
        lease = result.lease
        # Renewal (and the release on every exit path) starts the moment the lock is ours.
        async with renewing(self.locks, lease, self.clock, started_monotonic=started) as handle:
            # A statement issued now, under the lock: a holder that finished just before we took
            # it has committed its parts, and they are not computed (or recorded) a second time.
            read = await self.warmer.snapshot(slug, join=False)
            if (
                read is not None
                and read.head.data_hash == data_hash
                and self.warmer.up_to_date(read, self.clock.wall_ms())
            ):
                await self.warmups.set(slug, data_hash, WarmupState.READY, self.clock.wall_ms())
                return False
            run_id = await self.runs.start(
                JOB_ON_DEMAND,
                Trigger.ON_DEMAND,
                self.node,
                now,
                {
                    "slug": slug,
                    "dataHash": data_hash,
                    "lockBackend": lease.backend,
                    "fence": lease.fence,
                    "limit": 1,
                    "concurrency": 1,
                    "selected": 1,
                },
            )
            # Until the computation ends one way or another, the run counts as cancelled: a
            # shutdown that cancels this task leaves exactly that in the record.
            status = RunStatus.CANCELLED
            reason: str | None = "shutdown"
            error: str | None = "cancelled (shutdown)"
            counts = {"processed": 0, "skipped": 0, "failed": 1}
            try:
                await self.warmups.set(slug, data_hash, WarmupState.RUNNING, now, run_id=run_id)
                comparison = await self._current(slug, data_hash)
                fencing = Fencing(fence_key=self.locks.fence_key(lease), fence=lease.fence)
                task = asyncio.ensure_future(self.warmer.warm(comparison, list(PARTS), fencing))
                lost = asyncio.ensure_future(handle.lost.wait())
                try:
                    done, _ = await asyncio.wait(
                        {task, lost},
                        timeout=cfg.on_demand.max_duration_ms / 1000,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    lost.cancel()
                    if not task.done():
                        task.cancel()
                        await asyncio.wait({task})
                if task in done:
                    outcome = task.result()
                    self.computations += outcome.result is ItemResult.PROCESSED
                    status, reason, error = RunStatus.SUCCESS, None, None
                    counts = {"processed": 0, "skipped": 0, "failed": 0, outcome.result.value: 1}
                elif handle.is_lost:
                    status, reason, error = RunStatus.FAILED, "lock_lost", "lock_lost"
                else:
                    status, reason, error = RunStatus.CANCELLED, "max_duration", "max_duration"
            except Exception as exc:
                if not isinstance(exc, WarmupdError):
                    log.exception("ondemand.error", slug=slug)
                status, reason = RunStatus.FAILED, "error"
                error = (
                    exc.message if isinstance(exc, WarmupdError) else f"{type(exc).__name__}: {exc}"
                )
                counts = {"processed": 0, "skipped": 0, "failed": 1}
            finally:
                await asyncio.shield(
                    self._record(slug, data_hash, run_id, status, reason, error, counts, started)
                )
        return False

    async def _record(
        self,
        slug: str,
        data_hash: str,
        run_id: int,
        status: RunStatus,
        reason: str | None,
        error: str | None,
        counts: dict[str, int],
        started: float,
    ) -> None:
        now = self.clock.wall_ms()
        record = await self.runs.finish(
            run_id,
            status=status,
            now_ms=now,
            reason=reason,
            errors=[f"{slug}: {error}"] if error else [],
            processed=counts["processed"],
            skipped=counts["skipped"],
            failed=counts["failed"],
        )
        final = WarmupState.READY if status is RunStatus.SUCCESS else WarmupState.FAILED
        await self.warmups.set(slug, data_hash, final, now, error=error, run_id=run_id)
        level = outcome_level(status, processed=counts["processed"], failed=counts["failed"])
        extra = {"error": error} if error else {}
        log.log(level, "ondemand.finished", slug=slug, run=run_id, status=status, **extra)
        if self.metrics:
            self.metrics.run_finished(
                JOB_ON_DEMAND,
                status,
                duration_s=self.clock.monotonic() - started,
                finished_ms=record.finished_at_ms or now,
                processed=counts["processed"],
                skipped=counts["skipped"],
                failed=counts["failed"],
            )

    async def _current(self, slug: str, data_hash: str) -> Comparison:
        comparison = await self.comparisons.get(slug)
        if comparison is None or comparison.data_hash != data_hash:
            raise WarmupdError(f"comparison {slug!r} changed while queued")
        return comparison

    # ----------------------------------------------------------------- stopping

    async def shutdown(self, grace_s: float) -> None:
        """Accept nothing new and start nothing queued; running warmups get ``grace_s``, then cancel.

        Queued warmups are cancelled at once (their status rows say ``cancelled (shutdown)``):
        draining lets work in progress finish, it does not start more.
        """
        self._accepting = False
        flights = list(self._flights.values())
        for flight in flights:
            # A follower computes nothing here: nothing of its own to let finish.
            if (flight.state is WarmupState.QUEUED or flight.elsewhere) and flight.task is not None:
                flight.task.cancel()
        running = [
            f.task
            for f in flights
            if f.state is WarmupState.RUNNING and not f.elsewhere and f.task is not None
        ]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
        tasks = [f.task for f in flights if f.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
