"""`warmupd calendar` and `check-config` print the fire times of warmupd's own DST rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from warmupd.cli import main


def cronsim_utc(expr: str, tz: str, after: str, n: int) -> list[str]:
    """The independent reference: cronsim implements Debian cron's DST handling."""
    start = datetime.fromisoformat(after.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
    it = CronSim(expr, start)
    return [next(it).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") for _ in range(n)]


@pytest.mark.parametrize(
    ("expr", "tz", "after"),
    [
        ("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z"),  # spring-forward gap
        ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z"),  # fall-back overlap: once
        ("0 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z"),  # hourly: both 02:00 fire
        ("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:00:00Z"),  # 30-minute shift
    ],
)
def test_calendar_json_agrees_with_cronsim(
    capsys: pytest.CaptureFixture[str], expr: str, tz: str, after: str
) -> None:
    assert main(["calendar", expr, "--tz", tz, "--after", after, "-n", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == cronsim_utc(expr, tz, after, 6)


def test_calendar_text_shows_utc_and_local(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["calendar", "30 2 * * *", "--tz", "America/New_York", "--after", "2026-03-07T00:00:00Z"]
    assert main([*args, "-n", "2"]) == 0
    out = capsys.readouterr().out
    # 02:30 does not exist on 2026-03-08 in New York: it fires once, at the first valid instant.
    assert "2026-03-08T07:00:00.000Z   2026-03-08T03:00:00-04:00" in out


def test_calendar_rejects_a_bad_expression_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["calendar", "0 25 * * *"]) == 2
    err = capsys.readouterr().err
    assert "hour must be 0-23" in err
    assert "Traceback" not in err


def test_check_config_next_fires_follow_the_job_time_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[jobs.warmup-forecasts]\nschedule = "30 2 * * *"\ntimezone = "America/New_York"\n'
    )
    assert main(["check-config", "-c", str(cfg), "--json"]) == 0
    fires = json.loads(capsys.readouterr().out)["nextFires"]["warmup-forecasts"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert fires == cronsim_utc("30 2 * * *", "America/New_York", now, 3)
