"""The real daemon assembled in the test's own event loop: real SQLite file, real locks, the real
HTTP application through aiohttp's test client, and ``Daemon.reload()`` as SIGHUP calls it.

Only the process pool is replaced (by :class:`GatedCpu`, for the warmer and the insights facts), so
that work can be held in flight or run inline without spawning worker processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.daemon_support import JOB_SECRET, WARMUP_SECRET, merge, toml
from tests.fakes import FakeClock
from tests.lock_support import free_port
from warmupd.config import load_config
from warmupd.daemon import Daemon
from warmupd.errors import ProducerError
from warmupd.importer import load_demo_data
from warmupd.wiring import Core, build_core, make_insights

T = TypeVar("T")
J = {"X-Job-Secret": JOB_SECRET, "Content-Type": "application/json"}
W = {"X-Warmup-Secret": WARMUP_SECRET, "Content-Type": "application/json"}


class GatedCpu:
    """Runs CPU work inline in the test process; while ``gate`` is set, every call waits on it.

    ``entered`` is set when a call is waiting, so a test knows work (and its lease) is in flight.
    """

    def __init__(self, *, gated: bool = False) -> None:
        self.gate: asyncio.Event | None = asyncio.Event() if gated else None
        self.entered = asyncio.Event()
        self.calls: list[str] = []
        self.starts = 0
        """How many times a run or a warmup asked for the workers ahead of its first call."""
        self.fail = False
        """When set, every call fails at once (an item error), so background work ends quickly."""

    def start(self) -> None:
        self.starts += 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.calls.append(fn.__name__)
        if self.fail:
            raise ProducerError("no compute in this test")
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return fn(*args, **kwargs)


@dataclass
class InProcess:
    daemon: Daemon
    core: Core
    client: Any
    config_path: Path
    config: dict[str, Any]
    cpu: GatedCpu

    def rewrite(self, extra: dict[str, Any]) -> None:
        """Write the config file again with ``extra`` merged in (then call ``daemon.reload()``)."""
        self.config = merge(self.config, extra)
        self.config_path.write_text(toml(self.config))


def base_config(root: Path) -> dict[str, Any]:
    secrets = root / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "job").write_text(JOB_SECRET)
    (secrets / "warmup").write_text(WARMUP_SECRET)
    return {
        "daemon": {"state_dir": str(root / "state"), "shutdown_grace": "1s", "pool_workers": 1},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "secrets": {
            "job_secret_file": str(secrets / "job"),
            "warmup_secret_file": str(secrets / "warmup"),
        },
    }


@asynccontextmanager
async def in_process(
    root: Path,
    aiohttp_client: Any,
    extra: dict[str, Any] | None = None,
    *,
    clock: FakeClock | None = None,
    gated: bool = False,
    demo: int = 0,
    name: str = "d",
) -> AsyncIterator[InProcess]:
    """A daemon's core and HTTP application over a real state file in ``root/name``."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    config = merge(base_config(home), extra or {})
    path = home / "warmupd.toml"
    path.write_text(toml(config))
    clock = clock or FakeClock(wall_ms=1_767_225_600_000)
    daemon = Daemon(load_config(path), clock=clock)
    async with AsyncExitStack() as stack:
        core = await build_core(
            stack, daemon.holder, clock=clock, node=daemon.node, metrics=daemon.metrics
        )
        if demo:
            await load_demo_data(core.db, count=demo, seed=7, now_ms=clock.wall_ms())
        cpu = GatedCpu(gated=gated)
        core.warmer.cpu = cpu
        # The insights facts step too runs inline: no process pool is ever spawned here.
        core.pool = cpu  # type: ignore[assignment]
        core.insights.swap(make_insights(daemon.holder(), core.pool))
        client = await aiohttp_client(daemon.assemble(core))
        try:
            yield InProcess(daemon, core, client, path, config, cpu)
        finally:
            await core.runner.shutdown(0)
            await core.on_demand.shutdown(0)


async def metric(client: Any, name: str) -> float | None:
    """The value of an unlabelled series in ``/metrics``."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
