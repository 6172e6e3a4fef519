"""Several real daemons sharing one lock backend: every fire runs exactly once."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess, wait_until
from tests.lock_support import REDIS_URL, delete_prefix, new_prefix, require_redis

pytestmark = pytest.mark.slow

FIRES = 20


def every_second(extra: dict[str, object]) -> dict[str, object]:
    """Only housekeeping, every second (seconds-first six-field form)."""
    return {
        "jobs": {
            "housekeeping": {"schedule": "* * * * * *", "misfire_grace": "0s"},
            "warmup-forecasts": {"enabled": False},
            "warmup-ai-explanations": {"enabled": False},
        },
        **extra,
    }


def fired_runs(db_paths: list[Path]) -> list[dict[str, object]]:
    rows = []
    for path in db_paths:
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        rows += [
            {
                "status": r["status"],
                "node": r["node"],
                "due": json.loads(r["metadata"]).get("dueAt"),
            }
            for r in conn.execute(
                "SELECT * FROM job_runs WHERE job = 'housekeeping' AND trigger = 'schedule'"
            )
        ]
        conn.close()
    return rows


def check_exactly_once(runs: list[dict[str, object]]) -> None:
    started = [r for r in runs if r["status"] != "skipped"]
    dues = Counter(r["due"] for r in started)
    assert len(dues) >= FIRES
    assert max(dues.values()) == 1, [d for d, n in dues.items() if n > 1]
    assert all(r["status"] == "success" for r in started)


def test_two_daemons_sharing_one_sqlite_file_run_each_fire_once(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    shared = tmp_path / "shared-state"
    a = DaemonProcess(tmp_path, "a", every_second({}), state_dir=shared)
    b = DaemonProcess(tmp_path, "b", every_second({}), state_dir=shared)
    daemons += [a.start(), b.start()]
    wait_until(lambda: len({r["due"] for r in fired_runs([a.db_path])}) >= FIRES + 1, timeout_s=60)
    assert a.stop() == 0
    assert b.stop() == 0
    runs = fired_runs([a.db_path])
    check_exactly_once(runs)
    assert len({r["node"] for r in runs}) >= 1


def test_two_daemons_sharing_one_redis_run_each_fire_once(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    require_redis()
    prefix = new_prefix()
    redis = {"redis": {"url": REDIS_URL, "key_prefix": prefix}}
    # Separate state files: only Redis coordinates them, as on two hosts.
    a = DaemonProcess(tmp_path, "a", every_second(redis))
    b = DaemonProcess(tmp_path, "b", every_second(redis))
    try:
        daemons += [a.start(), b.start()]
        wait_until(
            lambda: len({r["due"] for r in fired_runs([a.db_path, b.db_path])}) >= FIRES + 1,
            timeout_s=60,
        )
        assert a.stop() == 0
        assert b.stop() == 0
    finally:
        delete_prefix(prefix)
    runs = fired_runs([a.db_path, b.db_path])
    check_exactly_once(runs)
    assert {r["node"] for r in runs if r["status"] == "success"}  # someone ran them
