"""Distributed locks as leases, and fire claims (SPEC §4, §5).

:class:`Locks` is the one contract every backend implements (``SqliteLocks``, ``RedisLocks``,
``FallbackLocks``); the contract test suite runs unchanged against each. :func:`hold` and
:func:`renewing` keep a lease alive while its holder works and tell the holder the moment it may no
longer assume it owns the lock.

The contract, written once here:

- **Eligibility.** A key is free when nobody ever took it, when its last holder released it, or
  when its lease expired (the lease is valid while ``now < expires_at`` and acquirable from
  ``now == expires_at`` on). :meth:`Locks.acquire` is non-blocking and answers one of three
  distinct outcomes: :class:`~warmupd.models.Acquired`, :class:`~warmupd.models.Held` (someone else
  holds it) or :class:`~warmupd.models.Unavailable` (the backend could not be asked). They are never
  merged: "held" is an answer, "unavailable" is the absence of one.
- **Ownership.** Every acquisition draws a new random owner token (``secrets.token_hex(16)``);
  tokens are never shared between tasks or reused. Renew and release act only while the stored
  owner is still this token, so a holder whose lease expired and was taken over can neither extend
  nor delete the new owner's lock. An expired lease cannot be renewed, even when nobody took it yet.
- **Fencing.** :attr:`~warmupd.models.Lease.fence` strictly increases with every successful
  acquisition of a key, across releases, takeovers and any housekeeping; a writer passes it with
  its writes so a stale holder's write can be rejected downstream (the cache store does).
- **Holder.** Every acquisition stores this process's node id beside the lease, in the same round
  trip; :meth:`Locks.tag_run` adds the run id once the holder has recorded its run. A refused
  acquire answers ``Held(node, run_id)`` with what was stored (informational: it may be a moment
  stale), so a 429 can say who holds the lock.
- **Fire claims.** :meth:`Locks.claim_fire` is set-if-absent on ``(job, due_ms)``: across every
  process sharing the backend exactly one claimer wins while the claim lives (``ttl_ms``).

Leases are bounded in time, not in correctness: a holder paused for longer than its lease (GC,
SIGSTOP, a starved loop) can still believe it owns the lock. That is what the local deadline of
:func:`hold` and the fencing token are for. See ``docs/LOCKS.md``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from warmupd.clock import Clock
from warmupd.errors import LockedElsewhere, LockLost, ServiceUnavailable
from warmupd.locks.holder import describe_holder
from warmupd.logs import get_logger
from warmupd.models import Acquired, AcquireResult, Held, Lease, Unavailable

__all__ = [
    "AcquireObserver",
    "LeaseHandle",
    "Locks",
    "hold",
    "lease_margin_ms",
    "renewing",
    "result_name",
]

log = get_logger("warmupd.locks")

AcquireObserver = Callable[[str, str], None]
"""``on_acquire(backend, result)`` with result one of ``acquired``, ``held``, ``unavailable``; feeds
``warmupd_lock_acquisitions_total{backend,result}``."""

_KEY_RE: Final = re.compile(r"[^\s{}]{1,200}")

# Tasks that must outlive the coroutine that spawned them (releases after a cancellation). The event
# loop keeps only weak references to tasks, so they are anchored here until they finish.
_BACKGROUND: set[asyncio.Task[object]] = set()


def result_name(result: AcquireResult) -> str:
    """The metric label of an acquire outcome: ``acquired``, ``held`` or ``unavailable``."""
    if isinstance(result, Acquired):
        return "acquired"
    if isinstance(result, Held):
        return "held"
    return "unavailable"


def check_key(key: str) -> str:
    """Validate a lock key (no whitespace or braces: braces would break the Redis hash tag).

    :raises ValueError: when the key is empty, too long or contains those characters.
    """
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"invalid lock key {key!r}: 1-200 chars, no whitespace or braces")
    return key


def check_lease_ms(lease_ms: int) -> int:
    """Validate a lease length.

    :raises ValueError: when it is below 10 ms (a lease that short cannot be renewed in time).
    """
    if lease_ms < 10:
        raise ValueError(f"lease_ms must be >= 10, got {lease_ms}")
    return lease_ms


def spawn_background(coro: asyncio.Future[object] | object) -> asyncio.Task[object]:
    """Run ``coro`` as a task that survives the cancellation of its caller.

    Used for best-effort releases after a cancelled acquire or release, so that a lock taken by a
    request whose reply never arrived is not left blocking others for a whole lease.
    """
    task: asyncio.Task[object] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


async def drain_background(timeout_s: float = 2.0) -> None:
    """Wait (bounded) for pending background releases; called from ``close()``."""
    pending = [t for t in _BACKGROUND if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


class Locks(abc.ABC):
    """A lease-based lock backend plus set-if-absent fire claims.

    Implementations document only where they deviate from the module-level contract.

    :param on_acquire: optional observer called once per :meth:`acquire` with the backend name and
        the outcome (see :data:`AcquireObserver`); it must not raise or block.
    """

    #: Backend name, recorded in :attr:`Lease.backend` and run metadata (``sqlite``, ``redis``).
    name: str = "abstract"

    @property
    def backend(self) -> str:
        """The backend new locks go to (``sqlite``, ``redis``); see :attr:`Lease.backend`."""
        return self.name

    def __init__(self, *, on_acquire: AcquireObserver | None = None) -> None:
        self.on_acquire = on_acquire

    async def acquire(self, key: str, lease_ms: int) -> AcquireResult:
        """Try once to take ``key`` for ``lease_ms`` (non-blocking).

        :returns: ``Acquired(lease)`` with a new owner token and a fence greater than every fence
            this key had before; ``Held(holder)`` when another owner's lease is valid;
            ``Unavailable(reason)`` when the backend could not be asked (unreachable, timed out,
            busy). If the call is cancelled after the request may have reached the backend, a
            best-effort owner-checked release of the new token runs in the background.
        :raises ValueError: for an invalid key or a lease below 10 ms.
        """
        check_key(key)
        check_lease_ms(lease_ms)
        result = await self._acquire(key, lease_ms)
        backend = result.lease.backend if isinstance(result, Acquired) else self.backend
        self._observe(backend, result)
        return result

    def _observe(self, backend: str, result: AcquireResult) -> None:
        if self.on_acquire is not None:
            self.on_acquire(backend, result_name(result))

    @abc.abstractmethod
    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        """Backend part of :meth:`acquire` (arguments already validated, not yet observed)."""

    @abc.abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend ``lease`` by ``lease.lease_ms`` from now if it is still this token's, unexpired.

        :returns: True when extended; False when the lease is lost (expired, released or taken):
            the holder must stop at once.
        :raises ServiceUnavailable: when the backend could not be asked; the lease may still be
            valid, and the caller may retry until its local deadline.
        """

    @abc.abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Release ``lease`` if it is still this token's; never touches another owner's lock.

        The fence is kept, so the next acquisition gets a greater one.

        :returns: True when this call released a valid lease; False when it had already expired or
            been taken (nothing was changed).
        :raises ServiceUnavailable: when the backend could not be asked (the lease then expires by
            itself within ``lease_ms``).
        """

    @abc.abstractmethod
    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """Claim the fire ``(job, due_ms)``: set-if-absent, kept for ``ttl_ms``.

        A retried request after a lost reply still answers True for the process that claimed.

        :returns: True for exactly one claimer across every process sharing the backend while the
            claim lives; False for everyone else.
        :raises ServiceUnavailable: when the backend could not be asked.
        :raises ValueError: for an invalid job name or a ``ttl_ms`` below 1.
        """

    @abc.abstractmethod
    async def release_fire(self, job: str, due_ms: int) -> bool:
        """Give back a claim of ``(job, due_ms)`` this process made and will not run.

        Only this process's own claim is removed, so another process may then claim and run the
        fire. The scheduler calls it when it stops between claiming a fire ahead of time and
        handing it over.

        :returns: True when this process's claim was removed.
        :raises ServiceUnavailable: when the backend could not be asked.
        """

    async def tag_run(self, lease: Lease, run_id: int) -> bool:
        """Record that ``run_id`` holds ``lease``, so a refused acquirer can name it (best effort).

        Owner-checked like :meth:`renew`: it never touches another owner's lock. The default keeps
        nothing and answers False; the backends store it beside the lease.

        :returns: True when stored.
        :raises ServiceUnavailable: when the backend could not be asked.
        """
        return False

    def fence_key(self, lease: Lease) -> str:
        """The lineage of ``lease.fence`` for fenced writes (``CacheStore.put(fence_key=...)``).

        Fences are comparable only within one lineage: one lock key on one counter.
        """
        return f"{self.name}:{lease.key}"

    async def close(self) -> None:
        """Release resources this object created (connections, background releases).

        Leases still held are not released here; :func:`hold` releases its own on exit.
        """
        await drain_background()


async def release_surely(
    release_token: Callable[[str, str], Awaitable[bool]], lease: Lease
) -> bool:
    """``release_token(lease.key, lease.token)``, re-sent in the background if the caller is
    cancelled meanwhile, so a cancelled holder still frees its lock (the owner check makes a
    second release harmless). The backends' :meth:`Locks.release` is this."""
    try:
        return await release_token(lease.key, lease.token)
    except asyncio.CancelledError:
        spawn_background(release_token(lease.key, lease.token))
        raise


def lease_margin_ms(lease_ms: int) -> int:
    """Safety margin subtracted from the local deadline (notes §8.4, scaled for short leases).

    max(2 s, 1 % of the lease), but never more than a fifth of the lease, so a 1 s test lease still
    leaves the holder 800 ms. It absorbs clock-rate differences between this host's monotonic clock
    and the backend's expiry clock and leaves the holder time to cancel in-flight work.
    """
    return min(max(2_000, lease_ms // 100), lease_ms // 5)


class LeaseHandle:
    """What :func:`hold` yields: the lease, a lost signal and the local deadline.

    The holder checks :meth:`check` before starting each item (or waits on :attr:`lost`); an
    ``on_lost`` callback passed to :func:`hold` can cancel in-flight items the moment it fires.
    """

    def __init__(
        self,
        lease: Lease,
        clock: Clock,
        started_monotonic: float,
        on_lost: Callable[[str], None] | None,
    ) -> None:
        self.lease = lease
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None
        self.renewals = 0
        self._clock = clock
        self._on_lost = on_lost
        self._lease_s = lease.lease_ms / 1000
        self._margin_s = lease_margin_ms(lease.lease_ms) / 1000
        self.deadline = started_monotonic + self._lease_s - self._margin_s
        self.started_monotonic = started_monotonic

    def _renewed(self, started_monotonic: float) -> None:
        # The backend's new expiry is counted from when it received the renew, which is after
        # ``started_monotonic``; counting from the start keeps the local deadline on the safe side.
        self.deadline = started_monotonic + self._lease_s - self._margin_s
        self.renewals += 1

    def mark_lost(self, reason: str) -> None:
        """Signal that the lease can no longer be relied on (idempotent; first reason wins)."""
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        log.warning(
            "lock_lost",
            key=self.lease.key,
            backend=self.lease.backend,
            fence=self.lease.fence,
            reason=reason,
        )
        if self._on_lost is not None:
            self._on_lost(reason)

    def remaining_s(self) -> float:
        """Seconds until the local deadline (negative once passed)."""
        return self.deadline - self._clock.monotonic()

    @property
    def is_lost(self) -> bool:
        """Whether the lease is lost, including a local deadline passed while the loop was busy."""
        if not self.lost.is_set() and self.remaining_s() <= 0:
            self.mark_lost("deadline")
        return self.lost.is_set()

    def check(self) -> None:
        """Return if the lease is still ours; otherwise raise.

        :raises LockLost: when renewal said lost, renewal kept failing, or the local monotonic
            deadline passed (checked here directly, so a starved renewal task cannot hide it).
        """
        if self.is_lost:
            raise LockLost(f"lock {self.lease.key!r} lost ({self.lost_reason})")


async def _renew_loop(locks: Locks, handle: LeaseHandle, clock: Clock) -> None:
    lease = handle.lease
    interval_s = lease.lease_ms / 3000
    # After a failed renewal, retry sooner than lease/3 so a short blip does not use up the lease.
    retry_s = max(0.01, min(interval_s / 4, 1.0))
    # Anchored to the acquire, not to when this task first runs, so a late start cannot delay it.
    next_at = handle.started_monotonic + interval_s
    while not handle.lost.is_set():
        now = clock.monotonic()
        if now >= handle.deadline:
            handle.mark_lost("deadline")
            return
        await clock.sleep(max(0.0, min(next_at, handle.deadline) - now))
        if clock.monotonic() >= handle.deadline:
            handle.mark_lost("deadline")
            return
        started = clock.monotonic()
        try:
            # Bounded by the deadline: a renew still in flight then is worthless anyway.
            async with asyncio.timeout(max(0.001, handle.deadline - started)):
                ok = await locks.renew(lease)
        except (ServiceUnavailable, TimeoutError) as exc:
            log.warning(
                "lock_renew_failed", key=lease.key, backend=lease.backend, error=type(exc).__name__
            )
            next_at = clock.monotonic() + retry_s
            continue
        if not ok:
            handle.mark_lost("lost")
            return
        handle._renewed(started)
        next_at = started + interval_s


async def _renew_guarded(locks: Locks, handle: LeaseHandle, clock: Clock) -> None:
    try:
        await _renew_loop(locks, handle, clock)
    except Exception:
        # A bug or an unexpected backend error must not leave the holder believing it still owns
        # the lock until the deadline: say so loudly and stop the holder now.
        log.exception("lock_renew_crashed", key=handle.lease.key)
        handle.mark_lost("error")


async def _release_quietly(locks: Locks, lease: Lease) -> None:
    try:
        await locks.release(lease)
    except ServiceUnavailable as exc:
        # The lease expires by itself within lease_ms; nothing else can be done.
        log.warning("lock_release_failed", key=lease.key, error=type(exc).__name__)


@contextlib.asynccontextmanager
async def renewing(
    locks: Locks,
    lease: Lease,
    clock: Clock,
    *,
    started_monotonic: float | None = None,
    on_lost: Callable[[str], None] | None = None,
) -> AsyncIterator[LeaseHandle]:
    """Keep an already acquired ``lease`` alive; release it on every exit path.

    A background task renews every ``lease_ms / 3``. The handle is marked lost (``lost`` set,
    ``on_lost(reason)`` called once) when a renewal answers False (reason ``lost``), or when no
    renewal succeeded before the local deadline — start of the last successful acquire/renew +
    lease − :func:`lease_margin_ms` on the monotonic clock (reason ``deadline``). Leaving the block
    (normally, by an exception or by cancellation) stops the renewal and releases the lease in a
    shielded task, so a cancelled holder still frees its lock.

    :param started_monotonic: when the acquire call started (defaults to now; pass it for a
        tighter deadline).
    :param on_lost: called from the event loop once when the lease is lost, e.g. to cancel work.
    """
    start = clock.monotonic() if started_monotonic is None else started_monotonic
    handle = LeaseHandle(lease, clock, start, on_lost)
    renewer = asyncio.create_task(_renew_guarded(locks, handle, clock), name=f"renew:{lease.key}")
    try:
        yield handle
    finally:
        renewer.cancel()
        release = spawn_background(_release_quietly(locks, lease))
        # Shield: a holder cancelled while leaving (SIGTERM during cleanup) still releases; the
        # release task is anchored in _BACKGROUND and finishes even if this await is interrupted.
        await asyncio.shield(asyncio.wait([renewer, release]))


@contextlib.asynccontextmanager
async def hold(
    locks: Locks,
    key: str,
    lease_ms: int,
    clock: Clock,
    *,
    on_lost: Callable[[str], None] | None = None,
) -> AsyncIterator[LeaseHandle]:
    """Acquire ``key`` and keep it for the block (see :func:`renewing`).

    Callers that must record *why* they did not get the lock (a skipped run's reason) call
    :meth:`Locks.acquire` themselves and then :func:`renewing`.

    :raises LockedElsewhere: when another owner holds the lock.
    :raises ServiceUnavailable: when the backend could not be asked.
    """
    started = clock.monotonic()
    result = await locks.acquire(key, lease_ms)
    if isinstance(result, Held):
        raise LockedElsewhere(
            f"lock {key!r} is held elsewhere ({describe_holder(result)})",
            run_id=result.run_id,
            node=result.holder,
        )
    if isinstance(result, Unavailable):
        raise ServiceUnavailable(f"lock backend unavailable ({result.reason})")
    async with renewing(
        locks, result.lease, clock, started_monotonic=started, on_lost=on_lost
    ) as handle:
        yield handle
