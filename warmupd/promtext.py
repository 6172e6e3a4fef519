"""A small Prometheus registry rendering the text exposition format 0.0.4.

Why hand-written rather than ``prometheus-client``: warmupd needs three metric types, labels and the
text format — about 300 lines. ``prometheus-client`` would add a dependency (with process/platform
collectors and a global default registry we would have to avoid anyway) to a daemon whose point is a
small idle footprint, and its multiprocess mode is irrelevant here: only the event-loop process
records metrics; process-pool workers return results and never touch them. The output format is
pinned by ``promtool check metrics`` in the test suite, so hand-writing it is not a guess.

Not thread-safe by design: every update and every scrape happens on the event-loop thread.
The metrics warmupd exports are declared in :mod:`warmupd.metrics`; this module knows none of them.
"""

from __future__ import annotations

import bisect
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "CounterChild",
    "Gauge",
    "Histogram",
    "HistogramChild",
    "Registry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :meth:`Registry.render` output."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

ScrapeHook = Callable[[], "Awaitable[None] | None"]


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _labelset(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


ChildT = TypeVar("ChildT")


class _Family(Generic[ChildT]):
    """A metric family: name, help, label names and one child per label-value tuple."""

    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {name}")
        self._children: dict[tuple[str, ...], ChildT] = {}

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if len(labels) != len(self.labelnames) or set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def labels(self, **labels: object) -> ChildT:
        """The child for these label values (created at zero on first use).

        :raises ValueError: when the label names differ from the family's.
        """
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, **labels: object) -> None:
        """Drop one series (e.g. a job removed by a reload)."""
        self._children.pop(self._key(labels), None)

    def clear(self) -> None:
        """Drop every series."""
        self._children.clear()

    def _samples(self, key: tuple[str, ...], child: ChildT) -> Iterator[tuple[str, str, float]]:
        raise NotImplementedError

    def render(self) -> Iterator[str]:
        """The family's lines of the text exposition format."""
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for key in sorted(self._children):
            for name, labelset, value in self._samples(key, self._children[key]):
                yield f"{name}{labelset} {_value(value)}"


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (≥ 0: a counter never goes down)."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self.value += amount


class Counter(_Family[_CounterChild]):
    """A monotonically increasing count; the name must end in ``_total``."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        super().__init__(name, help_text, labelnames)

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        """``labels(**labels).inc(amount)``."""
        self.labels(**labels).inc(amount)

    def value(self, **labels: object) -> float:
        """The current value of one series (0 when never touched; does not create it)."""
        child = self._children.get(self._key(labels))
        return child.value if child is not None else 0.0

    def _samples(
        self, key: tuple[str, ...], child: _CounterChild
    ) -> Iterator[tuple[str, str, float]]:
        yield self.name, _labelset(self.labelnames, key), child.value


class _GaugeChild:
    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def get(self) -> float:
        """The value, from the function when one is set."""
        return float(self.function()) if self.function is not None else self.value


class Gauge(_Family[_GaugeChild]):
    """A value that goes up and down, set directly or computed at scrape time."""

    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float, **labels: object) -> None:
        """Set one series to ``value``."""
        child = self.labels(**labels)
        child.function = None
        child.value = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        """Add ``amount`` to one series."""
        self.labels(**labels).value += amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        """Subtract ``amount`` from one series."""
        self.labels(**labels).value -= amount

    def set_function(self, function: Callable[[], float], **labels: object) -> None:
        """Evaluate ``function`` at every scrape for this series (e.g. a queue's ``qsize``).

        It runs on the event loop inside the scrape, so it must be cheap and non-blocking.
        """
        self.labels(**labels).function = function

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        """Replace every series at once: keys are label-value tuples in label-name order.

        Series absent from ``values`` disappear; meant for scrape hooks that recount a whole family
        (cache entries by kind and state).
        """
        fresh: dict[tuple[str, ...], _GaugeChild] = {}
        for key, value in values.items():
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key!r}")
            child = fresh[tuple(str(v) for v in key)] = _GaugeChild()
            child.value = float(value)
        self._children = fresh

    def value(self, **labels: object) -> float | None:
        """The current value of one series, or None when it does not exist."""
        child = self._children.get(self._key(labels))
        return child.get() if child is not None else None

    def _samples(
        self, key: tuple[str, ...], child: _GaugeChild
    ) -> Iterator[tuple[str, str, float]]:
        yield self.name, _labelset(self.labelnames, key), child.get()


class _HistogramChild:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        # bisect_left finds the first bound >= value: Prometheus buckets are "less than or equal".
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value


class Histogram(_Family[_HistogramChild]):
    """Observations counted into cumulative ``le`` buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Iterable[str] = (), *, buckets: Iterable[float]
    ) -> None:
        super().__init__(name, help_text, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be non-empty and distinct")
        self.bounds = (*bounds, math.inf)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, value: float, **labels: object) -> None:
        """``labels(**labels).observe(value)``."""
        self.labels(**labels).observe(value)

    def _samples(
        self, key: tuple[str, ...], child: _HistogramChild
    ) -> Iterator[tuple[str, str, float]]:
        cumulative = 0
        for bound, n in zip(self.bounds, child.counts, strict=True):
            cumulative += n
            labelset = _labelset((*self.labelnames, "le"), (*key, _value(bound)))
            yield f"{self.name}_bucket", labelset, cumulative
        labelset = _labelset(self.labelnames, key)
        yield f"{self.name}_sum", labelset, child.sum
        yield f"{self.name}_count", labelset, child.count


class Registry:
    """An ordered set of metric families and the hooks that refresh them before a scrape."""

    def __init__(self) -> None:
        self._families: dict[str, _Family[Any]] = {}
        self._hooks: list[ScrapeHook] = []

    def _add(self, family: _Family[ChildT]) -> None:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} is already registered")
        self._families[family.name] = family

    def counter(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Counter:
        """Register and return a :class:`Counter`."""
        family = Counter(name, help_text, labelnames)
        self._add(family)
        return family

    def gauge(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Gauge:
        """Register and return a :class:`Gauge`."""
        family = Gauge(name, help_text, labelnames)
        self._add(family)
        return family

    def histogram(
        self, name: str, help_text: str, labelnames: Iterable[str] = (), *, buckets: Iterable[float]
    ) -> Histogram:
        """Register and return a :class:`Histogram`."""
        family = Histogram(name, help_text, labelnames, buckets=buckets)
        self._add(family)
        return family

    def add_scrape_hook(self, hook: ScrapeHook) -> None:
        """Run ``hook`` (sync or async) before every :meth:`collect`, e.g. to recount cache entries.

        A failing hook fails the scrape: a half-refreshed exposition would look healthy while lying.
        """
        self._hooks.append(hook)

    def render(self) -> str:
        """The text exposition of every family (gauge functions evaluated now, hooks not run)."""
        lines = [line for family in self._families.values() for line in family.render()]
        return "\n".join(lines) + "\n"

    async def collect(self) -> str:
        """Run the scrape hooks in registration order, then :meth:`render` (``/metrics``)."""
        for hook in self._hooks:
            result = hook()
            if inspect.isawaitable(result):
                await result
        return self.render()


CounterChild = _CounterChild
"""One series of a :class:`Counter` (``labels(...)``): kept by a caller that counts it often."""
HistogramChild = _HistogramChild
"""One series of a :class:`Histogram` (``labels(...)``): kept by a caller that observes it often."""
