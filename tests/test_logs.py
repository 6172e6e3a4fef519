"""Logging: the text and JSON line formats, journald prefixes, redaction, on a real stderr."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from warmupd import logs
from warmupd.errors import UsageError
from warmupd.logs import configure_logging, get_logger, register_secret

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    logs.reset_logging()
    logs._clear_secrets()
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_text_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    get_logger("warmupd.test").info(
        "run.finished", job="warmup-forecasts", run=12, status="success"
    )
    (line,) = _lines(capsys)
    assert re.fullmatch(
        TS + r" INFO run\.finished job=warmup-forecasts run=12 status=success", line
    )


def test_text_values_are_quoted_and_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "debug")
    get_logger("warmupd.test").warning(
        "item.failed",
        slug="iphone-vs-android",
        error='bad "thing"\nsecond line',
        path="C:\\x",
        empty="",
        eq="a=b",
        ratio=0.5,
        ok=True,
        none=None,
        bell="a\x07b",
    )
    (line,) = _lines(capsys)
    fields = line.split(" ", 3)[3]
    assert fields == (
        'slug=iphone-vs-android error="bad \\"thing\\"\\nsecond line" path="C:\\\\x" '
        'empty="" eq="a=b" ratio=0.5 ok=true none=null bell=a\\x07b'
    )


def test_foreign_records_use_logger_name_and_msg(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    logging.getLogger("aiohttp.server").warning("Error handling request %s\nnext", "GET /x")
    (line,) = _lines(capsys)
    assert re.fullmatch(
        TS + r' WARNING aiohttp\.server msg="Error handling request GET /x\\nnext"', line
    )


def test_plain_logging_with_fields_extra(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    logging.getLogger("warmupd.db").info("db.migrated", extra={"fields": {"version": 3}})
    (line,) = _lines(capsys)
    assert line.endswith(" INFO db.migrated version=3")


def test_exceptions_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    log = get_logger("warmupd.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("item.crashed", slug="a-vs-b")
    (line,) = _lines(capsys)
    assert ' ERROR item.crashed slug=a-vs-b exc="Traceback (most recent call last):\\n' in line
    assert line.endswith('ValueError: boom"')


def test_level_filtering_and_bind(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "warning")
    log = get_logger("warmupd.test").bind(job="housekeeping", run=7)
    assert log.name == "warmupd.test"
    assert not log.is_enabled_for(logging.INFO)
    log.debug("x.debug")
    log.info("x.info")
    log.warning("x.warning", items=3)
    log.error("x.error")
    lines = _lines(capsys)
    assert [ln.split(" ", 3)[1:] for ln in lines] == [
        ["WARNING", "x.warning", "job=housekeeping run=7 items=3"],
        ["ERROR", "x.error", "job=housekeeping run=7"],
    ]


def test_reconfiguring_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    configure_logging("json", "info")
    get_logger("warmupd.test").info("once")
    (line,) = _lines(capsys)
    assert json.loads(line)["event"] == "once"


def test_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "debug")
    log = get_logger("warmupd.test")
    log.debug(
        "run.started", job="warmup-forecasts", run=12, level="nested", note="a\nb", obj=Path("/x")
    )
    logging.getLogger("asyncio").error("Task was destroyed %s", "t1")
    first, second = (json.loads(ln) for ln in _lines(capsys))
    assert re.fullmatch(TS, first.pop("ts"))
    assert first == {
        "level": "debug",
        "logger": "warmupd.test",
        "event": "run.started",
        "job": "warmup-forecasts",
        "run": 12,
        "level_": "nested",
        "note": "a\nb",
        "obj": "/x",
    }
    assert second["event"] == "asyncio"
    assert second["level"] == "error"
    assert second["msg"] == "Task was destroyed t1"


def test_bad_format_or_level_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="log format"):
        configure_logging("yaml", "info")
    with pytest.raises(UsageError, match="log level"):
        configure_logging("text", "loud")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_registered_secrets_never_appear(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = 'Sup3r"Secret\\Value-0123456789'
    other = "another-secret-token-abcdef"
    register_secret(secret)
    register_secret(other)
    register_secret("")  # ignored, would otherwise match everywhere
    configure_logging(fmt, "info")
    log = get_logger("warmupd.test")
    log.info("auth.checked", header=f"Bearer {secret}", other=other)
    log.info(f"event-{other}")
    logging.getLogger("aiohttp.server").warning("got %s and %s", secret, other)
    try:
        raise RuntimeError(f"leaked {secret}")
    except RuntimeError:
        log.exception("oops")
    out = capsys.readouterr().err
    assert len(out.splitlines()) == 4
    for needle in (secret, other, json.dumps(secret)[1:-1], secret.replace('"', '\\"')):
        assert needle not in out
    assert out.count("***") >= 6
    assert logs.redact(f"x{secret}y") == "x***y"


def test_overlapping_secrets_redact_the_longest(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret("abcdefgh")
    register_secret("abcdefgh-and-more")
    configure_logging("text", "info")
    get_logger("t").info("e", v="abcdefgh-and-more")
    assert _lines(capsys)[0].endswith(" e v=***")


_CHILD = """
import logging, sys
from warmupd.logs import configure_logging, get_logger
configure_logging(sys.argv[1], "debug")
log = get_logger("warmupd.child")
log.debug("d.event")
log.info("i.event", job="x")
log.warning("w.event")
log.error("e.event")
logging.getLogger("other").critical("c %s", 1)
"""


def _run_child(tmp_path: Path, fmt: str, journal_stream: str | None) -> list[str]:
    err_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    with err_path.open("wb") as err:
        st = os.fstat(err.fileno())
        if journal_stream == "match":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream == "other":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
        subprocess.run(
            [sys.executable, "-c", _CHILD, fmt], stderr=err, env=env, check=True, timeout=30
        )
    return err_path.read_text().splitlines()


def test_journald_priority_prefixes(tmp_path: Path) -> None:
    lines = _run_child(tmp_path, "text", "match")
    assert [ln[:3] for ln in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert re.fullmatch(r"<6>" + TS + " INFO i.event job=x", lines[1])
    json_lines = _run_child(tmp_path, "json", "match")
    assert json_lines[2].startswith('<4>{"ts":')
    assert json.loads(json_lines[2][3:])["event"] == "w.event"


@pytest.mark.parametrize("journal_stream", [None, "other"])
def test_no_prefix_unless_journal_stream_is_stderr(
    tmp_path: Path, journal_stream: str | None
) -> None:
    lines = _run_child(tmp_path, "text", journal_stream)
    assert len(lines) == 5
    assert all(re.match(TS + " ", ln) for ln in lines)


def test_journald_detection_edge_cases(tmp_path: Path) -> None:
    with (tmp_path / "f").open("w") as f:
        st = os.fstat(f.fileno())
        assert logs.journald_stream_matches(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logs.journald_stream_matches(f, {"JOURNAL_STREAM": "garbage"})
        assert not logs.journald_stream_matches(f, {"JOURNAL_STREAM": "a:b"})
        assert not logs.journald_stream_matches(f, {})


def test_priority_of_custom_levels() -> None:
    assert [logs._priority(n) for n in (5, 10, 15, 20, 25, 30, 40, 45, 50, 60)] == [
        7, 7, 7, 6, 6, 4, 3, 3, 2, 2,
    ]  # fmt: skip


def test_explicit_stream_and_stack_info(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        configure_logging("text", "info", stream=stream)
        logging.getLogger("warmupd.x").info("hello", stack_info=True)
    (line,) = path.read_text().splitlines()
    assert ' warmupd.x msg=hello stack="Stack (most recent call last):\\n' in line
    assert capsys.readouterr().err == ""


class _BrokenStream:
    def write(self, text: str) -> int:
        raise OSError("disk full")

    def flush(self) -> None:
        raise AssertionError("unreachable")


def test_a_failing_stream_does_not_raise(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info", stream=_BrokenStream())  # type: ignore[arg-type]
    get_logger("warmupd.x").info("lost")
    # logging.Handler.handleError reports the failure on sys.stderr instead of raising.
    assert "OSError: disk full" in capsys.readouterr().err
