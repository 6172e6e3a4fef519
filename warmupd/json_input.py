"""Strict decoding of JSON text from outside (HTTP bodies, JSONL import lines), SPEC §12 and §17.

``json.loads`` accepts things warmupd must refuse: ``NaN``/``Infinity``, duplicate keys (the last
one silently wins) and lone surrogate escapes (``"\\ud800"`` decodes to a ``str`` that cannot be
encoded, so hashing or storing it fails far from the edge). :func:`decode_json` refuses each with
:class:`~warmupd.errors.InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from warmupd.errors import InvalidRequest, UnsupportedMediaType

# A lone surrogate can only come from a ``\uD8xx``–``\uDFxx`` escape: strict UTF-8 decoding of the
# body already refuses encoded surrogates. Valid pairs are joined by the decoder, so only text that
# holds such an escape needs the (slower) walk that finds a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_ERROR_KEY = 80


class _DuplicateKey(Exception):
    """Raised inside the decoder's object hook; never escapes :func:`decode_json`."""


class _Pairs(list[tuple[str, Any]]):
    """An object as the decoder saw it, duplicates and all (the slow path's view)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _reject_constant(text: str) -> float:
    raise InvalidRequest("body", f"{text} is not valid JSON (numbers must be finite)")


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (holds no lone surrogate), so it can be encoded and stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def field_name(path: str, key: str) -> str:
    """The name of member ``key`` of the object at ``path`` in an error: ``series[0].tea``.

    An empty key is shown as ``""`` and a long one is cut, so the field is always visible and
    the message stays short.
    """
    key = key if len(key) <= _MAX_ERROR_KEY else key[:_MAX_ERROR_KEY] + "…"
    key = key or '""'
    return f"{path}.{key}" if path else key


# Built once: ``json.loads`` with hooks builds a new decoder per call (bench P3: 2.4 % of the loop).
_STRICT = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)
_PAIRS = json.JSONDecoder(object_pairs_hook=_Pairs, parse_constant=_reject_constant)


def _first_problem(value: object) -> tuple[str, str] | None:
    """The first duplicate key or lone surrogate in document order, as ``(field, reason)``.

    Iterative, so a document as deep as the decoder accepts cannot exhaust the stack here.
    """
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            children = []
            for key, child in node:
                if not is_unicode(key):
                    return path or "body", "has a key that is not valid Unicode (a lone surrogate)"
                if key in seen:
                    return field_name(path, key), "duplicate key in a JSON object"
                seen.add(key)
                children.append((field_name(path, key), child))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(node)]))
        elif isinstance(node, str) and not is_unicode(node):
            return path or "body", "is not valid Unicode (a lone surrogate escape)"
    return None


def decode_json(text: str) -> object:
    """Decode a JSON document strictly: what ``json.loads`` accepts, minus what warmupd refuses.

    Refused, each as :class:`InvalidRequest` naming the field: malformed JSON, ``NaN`` and
    ``Infinity``, nesting too deep or numbers too long for the decoder, a duplicate key in any
    object (``series[2].tea``) and a string or key holding a lone surrogate escape (``"\\ud800"``),
    which is not Unicode and could be neither hashed nor stored.

    The common case costs one C-level decode with a small object hook; only a document with a
    duplicate key or a surrogate escape is decoded a second time to find and name the problem.
    """
    try:
        value = _STRICT.decode(text)
        suspect = _SURROGATE_ESCAPE.search(text) is not None
    except _DuplicateKey:
        value, suspect = None, True
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            "body", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError):
        raise InvalidRequest(
            "body", "is not acceptable JSON (too deep or too long a number)"
        ) from None
    if suspect:
        problem = _first_problem(_PAIRS.decode(text))
        if problem is not None:
            raise InvalidRequest(*problem)
    return value


def decode_body(raw: bytes, content_type: str, *, required: bool) -> object:
    """Decode an HTTP request body strictly (:func:`decode_json`), by its media type.

    :param content_type: the request's media type, without parameters (``application/json``).
    :returns: the decoded value, or ``None`` for an absent body when ``required`` is false.
    :raises UnsupportedMediaType, InvalidRequest:
    """
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if not raw.strip():
        # An empty body declared as JSON is invalid JSON, not "no body" (clients such as aiohttp
        # label a bodiless POST application/octet-stream, which stays "no body").
        if required or is_json:
            raise InvalidRequest("body", "a JSON object is required")
        return None
    if not is_json:
        raise UnsupportedMediaType(f"the body must be application/json, not {content_type[:80]}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body", "is not valid UTF-8") from None
    value = decode_json(text)
    if value is None:
        # An explicit ``null`` is a body, and not an object; only an absent body means "defaults".
        raise InvalidRequest("body", "must be a JSON object")
    return value
