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
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
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
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                outer.calls += 1
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
