"""A real browser for the dashboard tests: Debian's chromium driven by Playwright, and a scripted
OpenAI-compatible model server on loopback whose replies carry markup (to prove it stays inert)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
]
# Every run writes its screenshots to build/screenshots/ (ignored by git), so a test run never dirties
# the tree; `make screenshots` points WARMUPD_SCREENSHOTS at docs/screenshots/ to refresh the committed set.
SCREENSHOTS = Path(
    os.environ.get("WARMUPD_SCREENSHOTS")
    or Path(__file__).resolve().parent.parent / "build" / "screenshots"
)
MODEL_SCRIPT = "<script>window.__pwned = 1; alert('model')</script>"
MODEL_IMG = "<img src=x onerror=alert(2)>"


def require_browser() -> None:
    """Skip without chromium or Playwright on a developer machine; fail under CI."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright")
    if missing:
        message = f"the browser tests need {', '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class FakeModel:
    """Chat Completions on loopback: a reply with markup in every text, or a scripted error."""

    def __init__(self) -> None:
        self.fail_status: int | None = None
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        """Cleared: every reply waits until the test sets it (a run that stays running)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                outer.calls += 1
                outer.gate.wait(timeout=60)
                if outer.fail_status is not None:
                    body = json.dumps({"error": {"message": "model is down for the test"}})
                    self._send(outer.fail_status, body)
                    return
                content = {
                    "meaningExplanation": {
                        "summary": f"The model says {MODEL_SCRIPT} and {MODEL_IMG}.",
                        "keyDifferences": [f"First difference {MODEL_SCRIPT}", "Second one."],
                        "winner": None,  # never contradicts the computed leader
                    },
                    "peakExplanations": [],
                }
                reply = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": "test-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": json.dumps(content)},
                            "finish_reason": "stop",
                        }
                    ],
                }
                self._send(200, json.dumps(reply))

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[FakeModel]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def seed_history(db_path: Path, now_ms: int, node: str = "earlier-node:4242:a1b2c3") -> int:
    """A week of past runs on the jobs' real schedules (as a daemon before this one left them), so
    the timeline and the screenshots show what an operator sees after a week; returns how many.

    Daily forecasts at 02:00 (one failed, with its errors), the weekly AI run, hourly housekeeping
    at :17 (a few skipped: the lock was held elsewhere).
    """
    import sqlite3

    hour, day = 3_600_000, 86_400_000
    start = (now_ms - 7 * day) // hour * hour
    rows = []
    for h in range(7 * 24):
        at = start + h * hour
        if at + 17 * 60_000 < now_ms:
            skipped = h % 37 == 5
            rows.append(
                (
                    "housekeeping",
                    "skipped" if skipped else "success",
                    "locked_elsewhere" if skipped else None,
                    at + 17 * 60_000,
                    0 if skipped else 800 + h % 5 * 150,
                    0,
                    0,
                    0,
                    [],
                )
            )
        if at % day == 2 * hour and at < now_ms:
            failed = (at // day) % 7 == 3
            errors = [
                f"{s}: forecast failed: ETS did not converge"
                for s in ("cats-vs-dogs", "tea-vs-coffee")
            ]
            rows.append(
                (
                    "warmup-forecasts",
                    "failed" if failed else "success",
                    "all_items_failed" if failed else None,
                    at,
                    95_000 + (at // day) % 5 * 7_000,
                    0 if failed else 50,
                    0,
                    2 if failed else 0,
                    errors if failed else [],
                )
            )
        if at % (7 * day) == 3 * day + 3 * hour and at < now_ms:  # Sundays 03:00 UTC
            rows.append(("warmup-ai-explanations", "success", None, at, 1_260_000, 30, 0, 0, []))
    rows.sort(key=lambda r: r[3])
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            """INSERT INTO job_runs(job, status, reason, trigger, node, started_at, finished_at,
                   duration_ms, processed, skipped, failed, errors, metadata)
               VALUES (?, ?, ?, 'schedule', ?, ?, ?, ?, ?, ?, ?, ?, '{}')""",
            [
                (job, status, reason, node, at, at + ms, ms, done, skip, fail, json.dumps(errs))
                for job, status, reason, at, ms, done, skip, fail, errs in rows
            ],
        )
    conn.close()
    return len(rows)
