"""The secret check of the HTTP edge (SPEC §9): a pure function over headers and the current secrets.

Three scopes: ``job`` routes take the job secret (``X-Job-Secret`` or ``Authorization: Bearer``);
``warmup`` takes the warmup secret (``X-Warmup-Secret``) or the job secret; ``read`` routes are open
unless ``http.read_auth`` is on, then either secret will do. Every check fails closed: a scope whose
secrets are all unset answers 503 ``secret_not_configured`` instead of letting anyone in.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import StrEnum

from warmupd.config import Secrets
from warmupd.errors import SecretNotConfigured, Unauthorized


class Scope(StrEnum):
    """Who may call a route."""

    NONE = "none"
    READ = "read"
    JOB = "job"
    WARMUP = "warmup"


def presented_secrets(headers: Mapping[str, str], scope: Scope) -> list[str]:
    """The candidate secrets a request presents for ``scope`` (empty values dropped)."""
    names = ["X-Job-Secret"]
    if scope is not Scope.JOB:
        names.insert(0, "X-Warmup-Secret")
    values = [headers.get(name, "") for name in names]
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer":
        values.append(token.strip())
    return [value for value in values if value]


def _matches(presented: list[str], accepted: list[str]) -> bool:
    # Every pair is compared (no early exit) so the time taken does not reveal which header or
    # which secret came close; compare_digest itself is constant-time per pair.
    ok = False
    for given in presented:
        for secret in accepted:
            ok |= hmac.compare_digest(given.encode(), secret.encode())
    return ok


def check_secret(
    scope: Scope, headers: Mapping[str, str], secrets: Secrets, *, read_auth: bool
) -> None:
    """Admit the request or raise.

    :raises SecretNotConfigured: the scope needs a secret and none of its secrets is set.
    :raises Unauthorized: no secret was presented, or none matches.
    """
    if scope is Scope.NONE or (scope is Scope.READ and not read_auth):
        return
    if scope is Scope.JOB:
        accepted = [secrets.job] if secrets.job else []
        what = "the job secret (X-Job-Secret or Authorization: Bearer)"
    else:
        accepted = [s for s in (secrets.warmup, secrets.job) if s]
        what = "a secret (X-Warmup-Secret, X-Job-Secret or Authorization: Bearer)"
    if not accepted:
        raise SecretNotConfigured(
            f"this endpoint needs {'the job' if scope is Scope.JOB else 'a'} secret and none is "
            "configured; set it in the environment or a credential file"
        )
    presented = presented_secrets(headers, scope)
    if not presented:
        raise Unauthorized(f"missing {what}")
    if not _matches(presented, accepted):
        raise Unauthorized(f"wrong secret: this endpoint needs {what}")
