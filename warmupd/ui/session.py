"""The dashboard's login session with ``http.read_auth`` (SPEC §15): a signed, expiring cookie value.

The value is ``<expiry ms>.<random>.<signature>``; the signature is an HMAC-SHA256 keyed by a key
derived from the job secret, so every daemon sharing that secret accepts it, and changing the secret
logs everyone out. The value carries no secret and nothing a client could forge without one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "warmupd_session"
MAX_AGE_S = 12 * 3600


def _key(job_secret: str) -> bytes:
    return hashlib.sha256(b"warmupd-ui-session\0" + job_secret.encode()).digest()


def _sign(job_secret: str, payload: str) -> str:
    return hmac.new(_key(job_secret), payload.encode(), hashlib.sha256).hexdigest()


def issue(job_secret: str, now_ms: int) -> str:
    """A new session value valid for :data:`MAX_AGE_S`."""
    payload = f"{now_ms + MAX_AGE_S * 1000}.{secrets.token_hex(8)}"
    return f"{payload}.{_sign(job_secret, payload)}"


def valid(value: str | None, job_secret: str | None, now_ms: int) -> bool:
    """Whether ``value`` was issued with ``job_secret`` and has not expired (fails closed)."""
    if not value or not job_secret:
        return False
    payload, _, signature = value.rpartition(".")
    expiry, _, _ = payload.partition(".")
    if not expiry.isdigit() or not hmac.compare_digest(signature, _sign(job_secret, payload)):
        return False
    return now_ms < int(expiry)
