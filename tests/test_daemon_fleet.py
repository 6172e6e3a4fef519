"""Several real daemons sharing one lock backend: every fire runs exactly once.

Parameterised over the built-in housekeeping job and both user-defined kinds (SPEC §16): for those,
the side effects are counted too — each URL requested once per fire, the command run once per fire.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess, wait_until
from tests.kinds_support import ThreadSite
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis

pytestmark = pytest.mark.slow

# Twenty fires for the built-in job; five are enough to show the kinds go through the same path.
FIRES = {"housekeeping": 20, "http": 5, "command": 5}
JOB = {"housekeeping": "housekeeping", "http": "warm-site", "command": "nightly"}


class Scenario:
    """One job that fires every second, and what its runs leave behind."""

    def __init__(self, kind: str, tmp: Path, site: ThreadSite) -> None:
        self.kind, self.job, self.fires = kind, JOB[kind], FIRES[kind]
        self.site = site
        self.fired_file = tmp / "fired.txt"

    def config(self, extra: dict[str, object]) -> dict[str, object]:
        """Only this job, every second (seconds-first six-field form)."""
        every_second = {"schedule": "* * * * * *", "misfire_grace": "0s"}
        jobs: dict[str, object] = {
            "warmup-forecasts": {"enabled": False},
            "warmup-ai-explanations": {"enabled": False},
        }
        if self.kind == "housekeeping":
            jobs["housekeeping"] = every_second
        elif self.kind == "http":
            urls = [self.site.url(f"/page/{n}") for n in range(3)]
            jobs[self.job] = {"kind": "http", "urls": urls, **every_second}
        else:
            script = f'echo "$WARMUPD_FIRE_TIME" >> "{self.fired_file}"'
            jobs[self.job] = {"kind": "command", "command": ["sh", "-c", script], **every_second}
        return {"jobs": jobs, **extra}

    def check_side_effects(self, runs: list[dict[str, object]]) -> None:
        successes = sum(r["status"] == "success" for r in runs)
        if self.kind == "http":
            assert dict(self.site.hits) == {f"/page/{n}": successes for n in range(3)}
        elif self.kind == "command":
            # One line per fire, each with its own fire time; a run cancelled at the stop may
            # or may not have got as far as writing its line.
            lines = self.fired_file.read_text().split()
            assert len(lines) == len(set(lines))
            assert successes <= len(lines) <= sum(r["status"] != "skipped" for r in runs)


@pytest.fixture(params=list(FIRES))
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scenario]:
    site = ThreadSite()
    yield Scenario(request.param, tmp_path, site)
    site.close()


def fired_runs(db_paths: list[Path], job: str) -> list[dict[str, object]]:
    rows = []
    for path in db_paths:
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        rows += [
            {
                "status": r["status"],
                "reason": r["reason"],
                "node": r["node"],
                "due": json.loads(r["metadata"]).get("dueAt"),
            }
            for r in conn.execute(
                "SELECT * FROM job_runs WHERE job = ? AND trigger = 'schedule'", (job,)
            )
        ]
        conn.close()
    return rows


def check_exactly_once(runs: list[dict[str, object]], scenario: Scenario) -> None:
    started = [r for r in runs if r["status"] != "skipped"]
    dues = Counter(r["due"] for r in started)
    assert len(dues) >= scenario.fires
    assert max(dues.values()) == 1, [d for d, n in dues.items() if n > 1]
    # A command in progress when its daemon stops is told to stop: that run is cancelled
    # (SPEC §16). The other jobs let in-flight work finish within the grace.
    allowed = {("success", None)}
    if scenario.kind == "command":
        allowed.add(("cancelled", "shutdown"))
    assert {(r["status"], r["reason"]) for r in started} <= allowed, started


def test_two_daemons_sharing_one_sqlite_file_run_each_fire_once(
    tmp_path: Path, daemons: list[DaemonProcess], scenario: Scenario
) -> None:
    shared = tmp_path / "shared-state"
    a = DaemonProcess(tmp_path, "a", scenario.config({}), state_dir=shared)
    b = DaemonProcess(tmp_path, "b", scenario.config({}), state_dir=shared)
    daemons += [a.start(), b.start()]
    wait_until(
        lambda: (
            len({r["due"] for r in fired_runs([a.db_path], scenario.job)}) >= scenario.fires + 1
        ),
        timeout_s=60,
    )
    assert a.stop() == 0
    assert b.stop() == 0
    runs = fired_runs([a.db_path], scenario.job)
    check_exactly_once(runs, scenario)
    assert len({r["node"] for r in runs}) >= 1
    scenario.check_side_effects(runs)


def test_two_daemons_sharing_one_redis_run_each_fire_once(
    tmp_path: Path, daemons: list[DaemonProcess], scenario: Scenario
) -> None:
    require_redis()
    prefix = new_prefix()
    redis = {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
    # Separate state files: only Redis coordinates them, as on two hosts.
    a = DaemonProcess(tmp_path, "a", scenario.config(redis))
    b = DaemonProcess(tmp_path, "b", scenario.config(redis))
    try:
        daemons += [a.start(), b.start()]
        wait_until(
            lambda: (
                len({r["due"] for r in fired_runs([a.db_path, b.db_path], scenario.job)})
                >= scenario.fires + 1
            ),
            timeout_s=60,
        )
        assert a.stop() == 0
        assert b.stop() == 0
    finally:
        delete_prefix(prefix)
    runs = fired_runs([a.db_path, b.db_path], scenario.job)
    check_exactly_once(runs, scenario)
    assert {r["node"] for r in runs if r["status"] == "success"}  # someone ran them
    scenario.check_side_effects(runs)
