"""The wire contract of the OpenAI-compatible provider, as pure functions (notes §3.1, §3.3, §3.4).

Prompt building, response parsing, validation, the merge with the built-in analysis, header parsing
and secret scrubbing live here so that each can be tested on its own; the HTTP client
(:mod:`warmupd.producers.insights_openai`) only moves bytes, retries and keeps the breaker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from warmupd.errors import ProducerError

SYSTEM_PROMPT = "\n".join(
    [
        "You explain Google Trends comparisons for a general audience.",
        "Values are relative search interest on a 0-100 scale where 100 is the highest point of "
        "either term in the period; they are not search volumes.",
        "Use only the facts provided; never invent events, dates, numbers or product names; if you "
        "suggest a cause, phrase it as a possibility.",
        "The summary has at most 2 sentences and names both terms. keyDifferences has 3 to 5 items "
        "of at most 25 words each. Write one explanation for each peakId given, at most 3 "
        "sentences each.",
        '"winner" is "termA", "termB" or "tie", and must agree with relationship.leader.',
        "Reply with one JSON object of this shape, no markdown:",
        '{"meaningExplanation": {"summary": "...", "keyDifferences": ["..."], '
        '"winner": "termA" | "termB" | "tie"}, '
        '"peakExplanations": [{"peakId": "...", "explanation": "..."}]}',
    ]
)

MAX_SUMMARY_CHARS = 800
MAX_BULLET_CHARS = 400
MAX_PEAK_CHARS = 1200
MAX_MESSAGE_CHARS = 200

_TERM_FIELDS = ("average", "latest", "momentumPct", "trendPct", "volatilityLabel", "share")
_PEAK_FIELDS = (
    "peakId", "date", "value", "prominence", "baseline", "ratio", "durationDays", "shape",
    "otherTermValue", "otherTermRatio", "otherTermRose", "recurring", "isGlobalMax",
)  # fmt: skip


def prompt_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The compact facts object the model sees: computed figures only, never the series."""
    comp, rel = facts["comparison"], facts["relationship"]
    names = {"termA": comp["termA"], "termB": comp["termB"]}

    def term(key: str) -> dict[str, Any]:
        figures = facts["terms"][key]
        out = {f: figures[f] for f in _TERM_FIELDS}
        out["leadShare"] = rel["leadShareA"] if key == "termA" else rel["leadShareB"]
        out["seasonality"] = figures["seasonality"]
        return out

    return {
        "comparison": {
            k: comp[k]
            for k in ("termA", "termB", "timeframe", "granularity", "start", "end", "points")
        },
        "terms": {"termA": term("termA"), "termB": term("termB")},
        "relationship": {
            "leader": rel["leader"],
            "leaderName": names.get(rel["leader"], "tie"),
            "marginPts": rel["marginPts"],
            "ratio": rel["ratio"],
            "crossovers": rel["crossovers"],
            "lastCrossover": rel["lastCrossover"],
            "currentLeader": rel["currentLeader"],
            "correlation": rel["correlation"],
        },
        "peaks": [
            {"term": pk["termName"], **{f: pk[f] for f in _PEAK_FIELDS}} for pk in facts["peaks"]
        ],
    }


def build_messages(facts: dict[str, Any]) -> list[dict[str, str]]:
    """System rules plus the facts as compact JSON (the user message)."""
    user = json.dumps(prompt_facts(facts), separators=(",", ":"), ensure_ascii=False)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _fail(reason: str) -> ProducerError:
    return ProducerError(f"unusable model output: {reason}")


_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[A-Za-z]*")


def first_json_object(text: str) -> str | None:
    """The first balanced ``{…}`` in ``text``; braces inside JSON strings do not count."""
    start = text.find("{")
    if start == -1:
        return None
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    # Unbalanced (cut off): a later "{" sits inside this object and cannot close either.
    return None


def completion_content(body_text: str) -> str:
    """The assistant's text from a Chat Completions response body.

    :raises ProducerError: not JSON, no choices, truncated (``finish_reason=length``), refused,
        filtered or empty.
    """
    try:
        body = json.loads(body_text)
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ProducerError(
            f"AI server returned an unexpected response body: {body_text[:MAX_MESSAGE_CHARS]!r}"
        ) from exc
    finish = choice.get("finish_reason")
    if finish == "length":
        raise ProducerError("truncated model output (finish_reason=length, raise ai.max_tokens)")
    refusal = message.get("refusal")
    if refusal:
        raise ProducerError(f"model refused: {str(refusal)[:MAX_MESSAGE_CHARS]}")
    if finish == "content_filter":
        raise ProducerError("model output was blocked by the server's content filter")
    content = message.get("content")
    if isinstance(content, list):
        # Some servers return content parts: [{"type": "text", "text": "..."}].
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise ProducerError("model returned no content")
    return content


def parse_model_json(content: str) -> dict[str, Any]:
    """The JSON object in the model's text, after dropping ``<think>`` blocks and code fences.

    :raises ProducerError: when there is no parseable JSON object.
    """
    cleaned = _FENCE.sub("", _THINK.sub("", content))
    error: ValueError | None = None
    first: dict[str, Any] | None = None
    pos = 0
    # Prose before the object may hold a stray "{…}" ("use {curly} or {} JSON"): try each balanced
    # candidate in order; the first object with our top-level key wins, else the first object.
    while (start := cleaned.find("{", pos)) != -1:
        candidate = first_json_object(cleaned[start:])
        if candidate is None:
            break
        try:
            obj = json.loads(candidate)
        except ValueError as exc:
            error = error or exc
        else:
            if isinstance(obj, dict):
                if "meaningExplanation" in obj:
                    return obj
                if first is None:
                    first = obj
        pos = start + 1
    if first is not None:
        return first
    if error is not None:
        raise _fail(f"invalid JSON ({error})")
    raise _fail(f"no JSON object in the reply: {content[:MAX_MESSAGE_CHARS]!r}")


def _text(value: Any, path: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{path} must be a non-empty string")
    if len(value) > limit:
        raise _fail(f"{path} is {len(value)} characters long (at most {limit})")
    return value.strip()


def validate_output(obj: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Check the model's object against the contract; normalise it.

    Returns ``{summary, keyDifferences, winner, peaks: {peakId: explanation}}``. Unknown peak ids
    are dropped; ``winner`` is mapped to ``termA``/``termB``/``tie`` (names are accepted) or
    ``None`` when absent.

    :raises ProducerError: a required field is missing, of the wrong type or too long.
    """
    meaning = obj.get("meaningExplanation")
    if not isinstance(meaning, dict):
        raise _fail("meaningExplanation must be an object")
    summary = _text(meaning.get("summary"), "meaningExplanation.summary", MAX_SUMMARY_CHARS)
    raw_bullets = meaning.get("keyDifferences")
    if not isinstance(raw_bullets, list):
        raise _fail("meaningExplanation.keyDifferences must be a list of strings")
    bullets = [
        _text(b, f"meaningExplanation.keyDifferences[{i}]", MAX_BULLET_CHARS)
        for i, b in enumerate(raw_bullets[:5])
    ]
    comp = facts["comparison"]
    aliases = {
        "terma": "termA", "termb": "termB", "tie": "tie",
        comp["termA"].casefold(): "termA", comp["termB"].casefold(): "termB",
    }  # fmt: skip
    winner_raw = meaning.get("winner")
    winner = aliases.get(winner_raw.casefold()) if isinstance(winner_raw, str) else None

    known = {pk["peakId"] for pk in facts["peaks"]}
    raw_peaks = obj.get("peakExplanations", [])
    if not isinstance(raw_peaks, list):
        raise _fail("peakExplanations must be a list")
    peaks: dict[str, str] = {}
    for i, item in enumerate(raw_peaks):
        if not isinstance(item, dict):
            raise _fail(f"peakExplanations[{i}] must be an object")
        pid = item.get("peakId")
        if isinstance(pid, str) and pid in known and pid not in peaks:
            path = f"peakExplanations[{i}].explanation"
            peaks[pid] = _text(item.get("explanation"), path, MAX_PEAK_CHARS)
    return {"summary": summary, "keyDifferences": bullets, "winner": winner, "peaks": peaks}


def merge(
    analysis: dict[str, Any], output: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """Combine our figures with the model's words (notes §3.4).

    Peaks (ids, dates, magnitudes, confidences) always come from the analysis; the model supplies
    the text, and a peak it skipped keeps the built-in text (``source: "builtin"``). If the model's
    ``winner`` contradicts the computed leader its prose would mislead, so the meaning falls back to
    the built-in text. Returns ``(meaning, peaks, disagreement)``, ``disagreement`` describing the
    contradiction for the log, or ``None``.
    """
    builtin_meaning = analysis["meaning"]
    leader = builtin_meaning["winner"]
    disagreement = None
    if output["winner"] is not None and output["winner"] != leader:
        disagreement = f"model said winner={output['winner']}, computed leader is {leader}"
        meaning = {**builtin_meaning, "source": "builtin"}
    else:
        bullets = list(output["keyDifferences"])
        # Fewer than three bullets from the model: top up with ours so the shape stays 3–5.
        for extra in builtin_meaning["keyDifferences"]:
            if len(bullets) >= 3:
                break
            bullets.append(extra)
        meaning = {
            "text": output["summary"],
            "keyDifferences": bullets,
            "confidence": builtin_meaning["confidence"],
            "winner": leader,
            "source": "model",
        }
    peaks = []
    for pk in analysis["peaks"]:
        text = output["peaks"].get(pk["peakId"])
        peaks.append(
            {**pk, "text": text, "source": "model"}
            if text is not None
            else {**pk, "source": "builtin"}
        )
    return meaning, peaks, disagreement


def server_message(body_text: str) -> str:
    """The message of an error body: ``error.message``, a top-level ``message``, or the raw text."""
    try:
        body = json.loads(body_text)
    except ValueError:
        return body_text.strip()[:MAX_MESSAGE_CHARS]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:MAX_MESSAGE_CHARS]
        if isinstance(err, str):
            return err[:MAX_MESSAGE_CHARS]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:MAX_MESSAGE_CHARS]
    return body_text.strip()[:MAX_MESSAGE_CHARS]


_KEYLIKE = re.compile(r"\b(?:sk|rk|pk|key)-[A-Za-z0-9_*.\-]{4,}")
_REDACTED = "[redacted]"


def scrub(text: str, key: str) -> str:
    """Remove an API key, and what looks like an echo of one, from a message.

    Servers echo keys back in 401 bodies, OpenAI masked (``sk-abc1****wxyz``) and others in full, so
    besides the exact key, any token sharing its first or last 6 characters and any ``sk-…``-like
    token is redacted.
    """
    if key:
        text = text.replace(key, _REDACTED)
        if len(key) >= 12:
            fragments = (key[:6], key[-6:])
            text = " ".join(
                _REDACTED if any(f in tok for f in fragments) else tok for tok in text.split(" ")
            )
    return _KEYLIKE.sub(_REDACTED, text)


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The server's requested delay: ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP date). ``None`` when absent, unparseable or not positive."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - (now or datetime.now(UTC))).total_seconds()
    return value if value > 0 else None
