"""Cron calendars under warmupd's rules: the only module that imports croniter.

A schedule is standard 5-field cron (``m h dom mon dow``), an ``@`` alias, or a 6-field form with
the seconds field *first* (``*/5 * * * * *``), evaluated in a zoneinfo time zone. croniter only
walks the naive local calendar; this module maps each naive match to an instant with Debian (Vixie)
cron's DST rules (SPEC §4):

- a *fixed-time* schedule (neither the minute nor the hour field starts with ``*``, Debian's
  ``MIN_STAR``/``HR_STAR`` test) fires once at the first valid instant after a spring-forward gap,
  and once, at the first occurrence, in a fall-back overlap;
- every other schedule follows real time: nothing for local times that do not exist, both
  occurrences of a repeated local time.

Instants are integer epoch milliseconds (UTC). The stateful part (claims, misfires, the loop) lives
in :mod:`warmupd.scheduler_loop`; config imports :func:`validate_schedule` from here, so this module
imports only the leaves of the package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from warmupd.clock import ms_to_iso
from warmupd.models import Fire

# Vixie-cron aliases; the dashboard reads them too, to say a schedule in words.
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# (name, low, high, names); fields are kept seconds-first internally.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class CronSpec:
    """A validated schedule: its croniter form and the facts the DST rules need."""

    expr: str
    croniter_expr: str
    has_seconds: bool
    fixed_time: bool
    """Debian's fixed-time test: neither minute nor hour starts with ``*`` (a seconds field does not
    matter, so ``0 30 2 * * *`` behaves like ``30 2 * * *``)."""


def _reject(expr: str, reason: str) -> ValueError:
    return ValueError(f"invalid cron expression {expr!r} ({reason})")


def _field_value(expr: str, index: int, text: str) -> int:
    name, low, high, names = _FIELDS[index]
    if text in names:
        return names.index(text) + (1 if index == 4 else 0)
    spelled = f" or {names[0]}-{names[-1]}" if names else ""
    if not text.isdigit():
        raise _reject(expr, f"{name} value {text!r} is not a number{spelled}")
    value = int(text)
    if not low <= value <= high:
        raise _reject(expr, f"{name} must be {low}-{high}{spelled}")
    return value


def _field_values(expr: str, index: int, text: str) -> set[int]:
    """The values one field selects; rejects what Vixie cron and croniter would read differently."""
    name, low, high, _ = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _reject(expr, f"{name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _field_value(expr, index, first), _field_value(expr, index, last)
            if start > end:
                raise _reject(expr, f"{name} range {base} is reversed")
        elif slash:
            # croniter reads "5/15" as 5-59/15, Vixie cron as just 5: refuse the ambiguity.
            raise _reject(expr, f"{name} step needs a range or '*'; write {base}-{high}/{step}")
        else:
            start = end = _field_value(expr, index, base)
        values.update(range(start, end + 1, step))
    return {0 if index == 5 and v == 7 else v for v in values}


@lru_cache(maxsize=512)
def parse_schedule(expr: str) -> CronSpec:
    """Validate ``expr`` and return its :class:`CronSpec` (cached: read again on every tick).

    :raises ValueError: ``invalid cron expression '<expr>' (<reason>)``.
    """
    text = expr.strip().lower()
    if text.startswith("@"):
        if text not in CRON_ALIASES:
            known = " ".join(a for a in CRON_ALIASES if a not in ("@midnight", "@annually"))
            raise _reject(expr, f"unknown alias; use one of {known}")
        text = CRON_ALIASES[text]
    fields = text.split()
    if len(fields) not in (5, 6):
        raise _reject(expr, f"expected 5 fields, or 6 with seconds first; got {len(fields)}")
    has_seconds = len(fields) == 6
    full = fields if has_seconds else ["0", *fields]
    selected = [_field_values(expr, i, field) for i, field in enumerate(full)]
    dom_text, dow_text = full[3], full[5]
    # Vixie: when either day field starts with '*' the two are ANDed, so an impossible
    # day-of-month can never be rescued by the day-of-week and would never fire.
    if not dom_text.startswith("*") and dow_text.startswith("*"):
        longest = max(_DAYS_IN_MONTH[m] for m in selected[4])
        if min(selected[3]) > longest:
            raise _reject(expr, f"day-of-month {min(selected[3])} never occurs in the months given")
    croniter_expr = " ".join(full if has_seconds else fields)
    try:
        croniter(croniter_expr, datetime(2000, 1, 1), second_at_beginning=has_seconds)
    except CroniterError as exc:  # a backstop: the field checks above should catch everything
        raise _reject(expr, str(exc)) from exc
    fixed = not full[1].startswith("*") and not full[2].startswith("*")
    return CronSpec(expr, croniter_expr, has_seconds, fixed)


def validate_schedule(expr: str) -> None:
    """Check a schedule expression; config wraps the error into a ``ConfigError`` with its key path.

    :raises ValueError: ``invalid cron expression '0 25 * * *' (hour must be 0-23)`` and the like.
    """
    parse_schedule(expr)


def zone_of(tz: str | ZoneInfo) -> ZoneInfo:
    """The :class:`ZoneInfo` for ``tz``.

    :raises ValueError: when ``tz`` names no IANA time zone.
    """
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def _as_ms(after: datetime | int) -> int:
    if isinstance(after, datetime):
        aware = after if after.tzinfo is not None else after.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _MS
    return after


def _offset_ms(ms: int, zone: ZoneInfo) -> int:
    offset = (_EPOCH + ms * _MS).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset for an aware datetime
    return offset // _MS


def _naive_to_ms(naive: datetime, zone: ZoneInfo, fold: int) -> int:
    return (naive.replace(tzinfo=zone, fold=fold) - _EPOCH) // _MS


def _gap_end_ms(before_ms: int, after_ms: int, zone: ZoneInfo) -> int:
    """The transition instant inside ``(before_ms, after_ms]``: the first valid instant after a gap.

    The two fold readings of a non-existent local time bracket the transition; bisect on whole
    seconds (transitions fall on whole seconds) for the first instant carrying the new offset.
    """
    low, high = before_ms // 1000, -(-after_ms // 1000)
    new_offset = _offset_ms(high * 1000, zone)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_ms(middle * 1000, zone) == new_offset:
            high = middle
        else:
            low = middle
    return high * 1000


def _naive_matches(spec: CronSpec, start: datetime) -> Iterator[datetime]:
    walk = croniter(
        spec.croniter_expr,
        start,
        ret_type=datetime,
        implement_cron_bug=True,  # Vixie: a day field starting with '*' ANDs dom and dow
        second_at_beginning=spec.has_seconds,
    )
    while True:
        try:
            yield walk.get_next(datetime)
        except (CroniterError, OverflowError, ValueError):
            return  # no match within croniter's search horizon, or past year 9999


def _instants(naive: Iterator[datetime], zone: ZoneInfo, fixed: bool) -> Iterator[int]:
    """Map naive local matches to instants under the DST rules (non-decreasing output)."""
    # Real-time schedules in a fall-back overlap: every naive match inside the overlap has two
    # instants, and all first occurrences precede all second ones; the matches inside one overlap
    # are consecutive in the naive walk, so buffer that run and emit it in instant order.
    overlap: list[tuple[int, int]] = []
    for local in naive:
        first, second = _naive_to_ms(local, zone, 0), _naive_to_ms(local, zone, 1)
        if first < second and not fixed:
            overlap.append((first, second))
            continue
        if overlap:
            yield from (pair[0] for pair in overlap)
            yield from (pair[1] for pair in overlap)
            overlap.clear()
        if first <= second:  # an ordinary time, or a fixed-time schedule's first occurrence
            yield first
        elif fixed:  # a local time inside a spring-forward gap
            yield _gap_end_ms(second, first, zone)


def iter_fire_times(expr: str, tz: str | ZoneInfo, after: datetime | int) -> Iterator[int]:
    """Fire instants (epoch ms, UTC) of ``expr`` in ``tz`` strictly after ``after``, ascending.

    ``after`` is epoch ms or a datetime (naive means UTC).

    :raises ValueError: for an invalid expression or time zone.
    """
    spec = parse_schedule(expr)
    zone = zone_of(tz)
    after_ms = _as_ms(after)
    # Start the naive walk at the earliest local reading of `after` over the next day, so that
    # the second occurrences of an overlap that `after` precedes are not skipped; what comes out
    # at or before `after` is filtered below.
    lowest = min(_offset_ms(after_ms, zone), _offset_ms(after_ms + _DAY_MS, zone))
    start = _EPOCH_NAIVE + (after_ms + lowest - 1000) // 1000 * timedelta(seconds=1)
    last = after_ms
    for ms in _instants(_naive_matches(spec, start), zone, spec.fixed_time):
        if ms > last:  # drops what precedes `after` and gap substitutes already emitted
            last = ms
            yield ms


def next_fire_times(expr: str, tz: str | ZoneInfo, after: datetime | int, n: int) -> list[int]:
    """The next ``n`` fire instants (epoch ms, UTC) strictly after ``after`` (fewer if the schedule
    ends, e.g. past year 9999).

    :raises ValueError: for an invalid expression or time zone.
    """
    times: list[int] = []
    if n <= 0:
        return times
    for ms in iter_fire_times(expr, tz, after):
        times.append(ms)
        if len(times) == n:
            break
    return times


def describe_next_fires(
    expr: str, tz: str | ZoneInfo, after_ms: int, n: int
) -> list[tuple[str, str]]:
    """The next ``n`` fires as ``(UTC ISO with Z, local ISO with offset)`` pairs for operators.

    :raises ValueError: for an invalid expression or time zone.
    """
    zone = zone_of(tz)
    return [
        (
            ms_to_iso(ms) or "",
            (_EPOCH + ms * _MS).astimezone(zone).isoformat(timespec="seconds"),
        )
        for ms in next_fire_times(expr, zone, after_ms, n)
    ]


def jitter_offset_ms(job_name: str, jitter_ms: int) -> int:
    """A delay in ``[0, jitter_ms]`` that is the same for a job name every time (like systemd's
    ``FixedRandomDelay=``): fleets spread out, each job keeps its rhythm."""
    if jitter_ms <= 0:
        return 0
    digest = hashlib.sha256(f"warmupd-jitter:{job_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_ms + 1)


@dataclass(frozen=True, kw_only=True)
class JobSchedule:
    """What the scheduler needs to know about one job (config builds these from ``jobs.*``).

    :raises ValueError: at construction, for an invalid expression, zone or negative duration.
    """

    name: str
    expr: str
    timezone: str = "UTC"
    misfire_grace_ms: int = 0
    jitter_ms: int = 0

    def __post_init__(self) -> None:
        parse_schedule(self.expr)
        zone_of(self.timezone)
        if self.misfire_grace_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"job {self.name!r}: misfire_grace and jitter must not be negative")

    @property
    def jitter_offset_ms(self) -> int:
        """This job's fixed jitter delay."""
        return jitter_offset_ms(self.name, self.jitter_ms)

    @property
    def claim_ttl_ms(self) -> int:
        """How long a fire claim must live: max(misfire_grace, 1 h) (SPEC §4), so a catch-up within
        grace can never re-run a fire another process already claimed."""
        return max(self.misfire_grace_ms, 3_600_000)

    def fire_times(self, after_ms: int, n: int) -> list[int]:
        """The next ``n`` nominal fire instants strictly after ``after_ms`` (jitter not added)."""
        return next_fire_times(self.expr, self.timezone, after_ms, n)

    def overdue_at_ms(self, last_success_ms: int) -> int | None:
        """When the job becomes overdue if nothing succeeds after ``last_success_ms`` (SPEC §4).

        "Older than two schedule periods plus misfire_grace" is read on the calendar: two fires
        after the last success have come due (jitter included) and grace has passed since the
        second, so irregular schedules (weekdays only, monthly) are judged by their own rhythm.
        ``None`` when the schedule has fewer than two fires left.
        """
        upcoming = self.fire_times(last_success_ms, 2)
        if len(upcoming) < 2:
            return None
        return upcoming[1] + self.jitter_offset_ms + self.misfire_grace_ms


COUNT_CAP = 1000
"""Missed slots are counted up to this many (the count only feeds logs and metrics); the latest one
is always found exactly, so a dense schedule after a long downtime cannot stall the event loop."""


def scan_slots(schedule: JobSchedule, after_ms: int, until_ms: int) -> tuple[int, int]:
    """``(count, latest)`` of the slots in ``(after_ms, until_ms]`` (count capped at
    :data:`COUNT_CAP`; ``latest`` is exact, 0 when there are none)."""
    count, latest = 0, 0
    for slot in iter_fire_times(schedule.expr, schedule.timezone, after_ms):
        if slot > until_ms:
            return count, latest
        count, latest = count + 1, slot
        if count == COUNT_CAP:
            return count, latest_slot(schedule, slot, until_ms)
    return count, latest


def latest_slot(schedule: JobSchedule, known_ms: int, until_ms: int) -> int:
    """The latest slot at or before ``until_ms``, given a slot ``known_ms`` at or before it.

    Bisects on "the first slot after t is at or before until_ms" (true below the answer, false at
    it): about 40 calendar look-ups for any span, instead of walking every slot.
    """
    below, above = known_ms - 1, until_ms
    while above - below > 1:
        middle = (below + above) // 2
        first = next_fire_times(schedule.expr, schedule.timezone, middle, 1)
        if first and first[0] <= until_ms:
            below = middle
        else:
            above = middle
    return below + 1


class ScheduleStateStore(Protocol):
    """Where the per-job cursor survives restarts (the ``schedule_state`` table).

    ``last_fire_ms`` is the latest accounted slot (``None`` until one is); ``next_fire_ms`` is the
    next slot as of saving, informational except for a job that never fired, whose first slot is
    still owed after a restart.
    """

    async def load(self, job: str) -> tuple[int | None, int | None]:
        """``(last_fire_ms, next_fire_ms)`` of ``job``; ``(None, None)`` when never saved."""
        ...

    async def save(self, job: str, last_fire_ms: int | None, next_fire_ms: int | None) -> None:
        """Persist both values for ``job`` (an upsert)."""
        ...


class FireClaimer(Protocol):
    """Set-if-absent claims of fire identities, shared by every process on one lock backend."""

    async def release_fire(self, job: str, due_ms: int) -> bool:
        """Give back this process's claim of a fire it will not run (see :meth:`Scheduler.run`)."""
        ...

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """Claim ``(job, due_ms)`` for ``ttl_ms``; ``True`` for exactly one caller in total."""
        ...


@dataclass(frozen=True, kw_only=True)
class Misfire:
    """Slots missed beyond their grace: recorded as one ``skipped`` run, reason ``misfired``."""

    job: str
    first_due_ms: int
    last_due_ms: int
    count: int
    """How many slots were missed (at most :data:`~warmupd.scheduler.COUNT_CAP`)."""


OnFire = Callable[[Fire], Awaitable[None]]
OnMisfire = Callable[[Misfire], Awaitable[None]]
