"""The OpenAI-compatible insights provider: one aiohttp session, retries, a breaker (SPEC §8).

Works with any Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp). The model only words what
the built-in analyser computed: the prompt is the facts, the peaks are ours, and the model's text is
merged into our figures (:func:`warmupd.producers.openai_wire.merge`).

Failure policy (notes §3.3): 408/409/429/5xx, connection errors and timeouts are retried up to
``max_retries`` times, waiting what the server asks (``retry-after-ms``/``Retry-After`` up to 60 s)
or 0.5 s·2^k (at most 8 s) with jitter. 400/422 fail the item. 401/403/404 fail it and open the
breaker: every later call fails fast without a request until :meth:`OpenAIInsights.reset_breaker`,
which the job runner calls when a run starts, so a bad key costs one request per run, not one per
item. The key is read from the environment at request time and scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from warmupd.errors import ProducerError
from warmupd.logs import get_logger
from warmupd.models import Comparison
from warmupd.producers import FactsRunner
from warmupd.producers.insights_builtin import analyse, assemble
from warmupd.producers.openai_wire import (
    build_messages,
    completion_content,
    merge,
    parse_model_json,
    retry_after_s,
    scrub,
    server_message,
    validate_output,
)

log = get_logger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
BREAKER_STATUS = {401: "unauthorized", 403: "forbidden", 404: "model_not_found"}
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0


class _Attempt:
    """Why one attempt failed, and whether and when to try again."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class OpenAIInsights:
    """:class:`~warmupd.producers.InsightsProducer` over an OpenAI-compatible Chat Completions API.

    :param base_url: ends in ``/v1``; requests go to ``{base_url}/chat/completions``.
    :param model: sent as ``model`` and recorded in the output.
    :param api_key_env: name of the environment variable holding the key; read at each request, so a
        rotated key needs no restart. Unset or empty: no ``Authorization`` header (local servers).
    :param timeout_s: total time of one attempt.
    :param max_retries: retries after the first attempt.
    :param prompt_version: recorded as ``promptVersion`` (part of the insights cache key).
    :param max_in_flight: requests in flight at once across every caller (``ai.max_in_flight``);
        ``None`` sets no cap of its own, so each run's concurrency alone bounds its calls (SPEC §17).
    :param sleep: the backoff sleep (tests record delays instead of waiting).
    :param facts_runner: where to run the analysis (the process pool); inline when ``None``.
    :param temperature: sent always: Ollama's OpenAI layer defaults to 1.0 when it is omitted.
    :param max_tokens: output budget; too small shows up as ``finish_reason=length``.
    :param seed: for reproducible output where the server honours it.
    :param max_retry_after_s: a longer ``Retry-After`` fails the item and opens the breaker.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str,
        timeout_s: float,
        max_retries: int,
        prompt_version: str,
        max_in_flight: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        facts_runner: FactsRunner | None = None,
        temperature: float = 0.2,
        max_tokens: int = 1200,
        seed: int = 7,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self.provider = "openai"
        self.model = model
        self.prompt_version = prompt_version
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key_env = api_key_env
        self._timeout_s = timeout_s
        self._max_retries = max(0, max_retries)
        # One semaphore for the one producer the daemon builds: runs and on-demand warmups share it.
        self._max_in_flight = None if max_in_flight is None else max(1, max_in_flight)
        self._sleep = sleep
        self._runner = facts_runner
        self._params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        self._max_retry_after_s = max_retry_after_s
        # Created lazily: a session binds to the running loop, and the constructor may run
        # before the daemon's loop exists.
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self._breaker: str | None = None

    async def __aenter__(self) -> OpenAIInsights:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent); a later call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def breaker_reason(self) -> str | None:
        """Why AI calls are stopped for this run, or ``None`` while they are allowed."""
        return self._breaker

    def reset_breaker(self) -> None:
        """Allow AI calls again (the job runner calls this at the start of each run)."""
        self._breaker = None

    def _open_breaker(self, reason: str) -> None:
        if self._breaker is None:
            log.warning("ai.stopped_for_run", reason=reason)
        self._breaker = reason

    def _check_breaker(self) -> None:
        if self._breaker is not None:
            raise ProducerError(f"AI calls stopped for this run: {self._breaker}")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeout_s,
                    connect=min(10.0, self._timeout_s),
                    sock_read=self._timeout_s,
                ),
                # No pool limit of its own (0 = none): aiohttp's default of 100 would be a hidden cap.
                connector=aiohttp.TCPConnector(limit=self._max_in_flight or 0, ttl_dns_cache=300),
                # Proxies from the environment would send the facts (and the key) elsewhere.
                trust_env=False,
                raise_for_status=False,
            )
        return self._session

    async def insights(self, comparison: Comparison, *, now_ms: int) -> dict[str, Any]:
        """See :meth:`warmupd.producers.InsightsProducer.insights`."""
        self._check_breaker()
        if self._runner is None:
            analysis = analyse(comparison)
        else:
            analysis = await self._runner(analyse, comparison)
        content = await self.complete(build_messages(analysis["facts"]))
        try:
            output = validate_output(parse_model_json(content), analysis["facts"])
        except ProducerError as exc:
            key = os.environ.get(self._api_key_env, "")
            raise ProducerError(scrub(exc.message, key)) from None
        meaning, peaks, disagreement = merge(analysis, output)
        if disagreement:
            log.warning(
                "ai.winner_disagrees",
                slug=comparison.slug,
                detail=disagreement,
                using="builtin summary",
            )
        return assemble(
            comparison,
            meaning=meaning,
            peaks=peaks,
            provider=self.provider,
            model=self.model,
            prompt_version=self.prompt_version,
            now_ms=now_ms,
        )

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """POST one chat completion with retries; the assistant's text of the answer.

        :raises ProducerError: the breaker is open, a non-retryable status, retries exhausted, or a
            200 whose content is truncated, refused or empty.
        """
        body = {
            "model": self.model,
            "messages": messages,
            **self._params,
            "stream": False,
            "response_format": {"type": "json_object"},
        }
        attempts = self._max_retries + 1
        for attempt in range(attempts):
            # Checked on every attempt: another item may have opened it while this one slept.
            self._check_breaker()
            key = os.environ.get(self._api_key_env, "")
            result = await self._post(body, key)
            if isinstance(result, str):
                try:
                    return completion_content(result)
                except ProducerError as exc:
                    # The body is echoed into the message; a server could echo the key into it.
                    raise ProducerError(scrub(exc.message, key)) from None
            if not result.retryable:
                raise ProducerError(result.message)
            if attempt == attempts - 1:
                raise ProducerError(
                    f"AI request failed after {attempts} attempts: {result.message}"
                )
            delay = result.retry_after
            if delay is not None and delay > self._max_retry_after_s:
                reason = f"rate_limited (retry after {delay:.0f} s)"
                self._open_breaker(reason)
                raise ProducerError(f"AI server {reason}")
            if delay is None:
                backoff = min(MAX_RETRY_DELAY_S, INITIAL_RETRY_DELAY_S * 2**attempt)
                delay = backoff * (1 - 0.25 * random.random())
            log.warning(
                "ai.retry",
                error=result.message,
                attempt=attempt + 1,
                max_retries=self._max_retries,
                delay_s=round(delay, 2),
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _post(self, body: dict[str, Any], key: str) -> str | _Attempt:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if self._sem is None and self._max_in_flight is not None:
            self._sem = asyncio.Semaphore(self._max_in_flight)
        try:
            async with (
                self._sem or contextlib.nullcontext(),
                self._get_session().post(self._url, json=body, headers=headers) as resp,
            ):
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except TimeoutError:
            return _Attempt(f"timed out after {self._timeout_s:g} s", retryable=True)
        except aiohttp.InvalidURL as exc:
            return _Attempt(f"invalid ai.base_url: {scrub(str(exc), key)}", retryable=False)
        except aiohttp.ClientError as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", key)
            return _Attempt(f"connection error ({detail})", retryable=True)
        text = raw.decode("utf-8", errors="replace")
        if 200 <= status < 300:
            return text
        message = f"HTTP {status}: {scrub(server_message(text), key)}"
        if status in BREAKER_STATUS:
            reason = f"{BREAKER_STATUS[status]} ({message})"
            self._open_breaker(reason)
            return _Attempt(f"AI server answered {reason}", retryable=False)
        should_retry = resp_headers.get("x-should-retry")
        retryable = status in RETRYABLE_STATUS or status >= 500
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        if not retryable:
            return _Attempt(f"AI server rejected the request ({message})", retryable=False)
        return _Attempt(message, retryable=True, retry_after=retry_after_s(resp_headers))
