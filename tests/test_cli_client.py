"""The CLI client commands against a real aiohttp server on loopback serving the app with fakes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.http_fakes import JOB_SECRET, WARMUP_SECRET, FakeServices, ThreadServer
from warmupd.cli import main
from warmupd.errors import AlreadyRunning, LockedElsewhere


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeServices]]:
    fakes = FakeServices()
    with ThreadServer(fakes) as url:
        yield url, fakes


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, server: tuple[str, FakeServices]) -> None:
    monkeypatch.delenv("WARMUPD_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("JOB_SECRET", JOB_SECRET)
    monkeypatch.setenv("WARMUP_SECRET", WARMUP_SECRET)
    server[1].recorder.errors.clear()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table(capsys: pytest.CaptureFixture[str], server: tuple[str, FakeServices]) -> None:
    code, out, err = run_cli(capsys, "status", "--url", server[0])
    assert (code, err) == (0, "")
    assert "state ok" in out
    assert "redis unconfigured" in out
    assert "JOB" in out
    assert "warmup-forecasts" in out
    assert "NODE" in out  # the live nodes (SPEC §14), with version and clock skew
    assert "SKEW MS" in out
    assert "host:1:abcdef" in out


def test_status_json(capsys: pytest.CaptureFixture[str], server: tuple[str, FakeServices]) -> None:
    code, out, _ = run_cli(capsys, "status", "--url", server[0], "--json")
    assert code == 0
    assert json.loads(out)["cache"] == {"fresh": 10, "stale": 2, "expired": 1}


def test_runs_json_and_table(
    capsys: pytest.CaptureFixture[str], server: tuple[str, FakeServices]
) -> None:
    code, out, _ = run_cli(
        capsys, "runs", "--url", server[0], "--json", "--job", "housekeeping", "--limit", "5"
    )
    assert code == 0
    runs = json.loads(out)
    assert runs
    assert {r["job"] for r in runs} == {"housekeeping"}
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
    code, out, _ = run_cli(capsys, "runs", "--url", server[0])
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["ID", "JOB", "STATUS"]


def test_trigger_exit_codes(
    capsys: pytest.CaptureFixture[str], server: tuple[str, FakeServices]
) -> None:
    url, fakes = server
    code, out, _ = run_cli(capsys, "trigger", "warmup-forecasts", "--url", url, "--limit", "3")
    assert code == 0
    assert out.startswith("started run ")
    assert fakes.recorder.writes[-1][1][2] == 3
    code, out, _ = run_cli(capsys, "trigger", "housekeeping", "--url", url, "--wait")
    assert code == 0
    assert "success" in out
    code, out, _ = run_cli(capsys, "trigger", "housekeeping", "--url", url, "--wait", "--json")
    assert json.loads(out)["status"] == "success"

    fakes.recorder.errors["trigger"] = AlreadyRunning("housekeeping is already running")
    code, out, err = run_cli(capsys, "trigger", "housekeeping", "--url", url)
    assert (code, out) == (3, "")
    assert err.count("\n") == 1
    assert "already_running" in err
    fakes.recorder.errors["trigger"] = LockedElsewhere("held by node b")
    assert run_cli(capsys, "trigger", "housekeeping", "--url", url)[0] == 3
    fakes.recorder.errors.clear()

    code, _, err = run_cli(capsys, "trigger", "no-such-job", "--url", url)
    assert code == 1
    assert err.startswith("warmupd: not_found (404)")


def test_trigger_wrong_secret_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server: tuple[str, FakeServices],
) -> None:
    monkeypatch.setenv("JOB_SECRET", "not-the-right-secret-at-all")
    code, _, err = run_cli(capsys, "trigger", "housekeeping", "--url", server[0])
    assert code == 1
    assert err.count("\n") == 1
    assert "unauthorized (401)" in err
    assert "not-the-right-secret" not in err


def test_warmup(capsys: pytest.CaptureFixture[str], server: tuple[str, FakeServices]) -> None:
    code, out, _ = run_cli(capsys, "warmup", "iphone-vs-android", "--url", server[0])
    assert code == 0
    assert out.strip() == ("iphone-vs-android: queued (/api/comparison/iphone-vs-android/status)")
    code, _, err = run_cli(capsys, "warmup", "../etc/passwd", "--url", server[0])
    assert code == 2
    assert "slug" in err


def test_unreachable_daemon_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed again: nothing listens there.
    for argv in (["status"], ["runs"], ["trigger", "housekeeping"], ["warmup", "a-b"]):
        code, out, err = run_cli(capsys, *argv, "--url", f"http://127.0.0.1:{port}")
        assert code == 1
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith("warmupd: cannot reach the daemon at http://127.0.0.1:")
        assert "Traceback" not in err
