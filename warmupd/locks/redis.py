"""Redis leases on a single primary (SPEC §5; not Redlock). The only module that imports redis.

Details of the :class:`~warmupd.locks.Locks` contract here:

- **Keys.** Lock ``name`` lives in ``{prefix}{name}:lock`` (value: the owner token, a space and
  the holder's description — node id, then the run id once tagged; ``PX`` lease) and its fence in
  ``{prefix}{name}:fence`` (an ``INCR`` counter with no TTL); the braces are a Redis Cluster hash
  tag so both land in one slot. One key per lease: naming the holder costs no extra command. A fire claim is
  ``{prefix}{job}:fire:{due_ms}``.
- **Scripts.** Acquire, renew, release and claim are Lua scripts (atomic on the server). Acquire and
  claim are idempotent for their own token, so redis-py's retry after a lost reply answers "acquired
  (same fence)" / "claimed", never "held". A release retried after a lost reply answers False.
- **Expiry** is the server's clock (``PX``); the client's clock plays no part in it.
- **Failures.** Connection errors, timeouts and error replies (``OOM``, ``READONLY``, ``LOADING``)
  give ``Unavailable`` from acquire and :class:`~warmupd.errors.ServiceUnavailable` from the
  others. Calls are bounded by ``socket_timeout``/``socket_connect_timeout`` and two quick retries;
  the client reconnects by itself on the next call.
- **What it rests on:** one primary, ``maxmemory-policy noeviction`` (an evicted lock key is a lost
  lock; :meth:`RedisLocks.check_server` warns otherwise), and persistence for the fence counters: a
  Redis restarted empty loses held locks (holders see renew → False) and restarts fences at 1.
  ``FallbackLocks`` therefore takes its fences from SQLite.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from warmupd.clock import Clock
from warmupd.errors import ServiceUnavailable
from warmupd.locks import (
    AcquireObserver,
    Locks,
    check_key,
    release_surely,
    spawn_background,
)
from warmupd.locks.holder import holder_text, parse_holder
from warmupd.logs import get_logger
from warmupd.models import Acquired, AcquireResult, Lease, Unavailable

log = get_logger("warmupd.locks.redis")

# The lock key's value is "<owner token> <holder text>": the owner and who it is, in one key, so a
# lease costs no more keys or commands than a bare lock. Tokens are hex (no spaces); `owner()` cuts
# the value at the first space.
_OWNER = """
local function owner(value)
  local sep = string.find(value, ' ', 1, true)
  if sep then return string.sub(value, 1, sep - 1), string.sub(value, sep + 1) end
  return value, ''
end
"""

# KEYS[1]=lock, KEYS[2]=fence; ARGV[1]=token, ARGV[2]=lease_ms, ARGV[3]=holder text
# -> {fence, ''} when acquired, {0, stored holder text or ''} when held.
_ACQUIRE = (
    _OWNER
    + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local who, holder = owner(cur)
  if who == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(redis.call('GET', KEYS[2]) or '0'), ''}
  end
  return {0, holder}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
return {fence, ''}
"""
)

# KEYS[1]=lock; ARGV[1]=token, ARGV[2]=lease_ms -> 1 renewed, 0 lost.
_RENEW = (
    _OWNER
    + """
local cur = redis.call('GET', KEYS[1])
if not cur or owner(cur) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
)

# KEYS[1]=lock; ARGV[1]=token -> 1 released, 0 not ours (expired or taken).
_RELEASE = (
    _OWNER
    + """
local cur = redis.call('GET', KEYS[1])
if not cur or owner(cur) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
)

# KEYS[1]=lock; ARGV[1]=token, ARGV[2]=holder text -> 1 stored, 0 not ours. KEEPTTL: the lease's
# remaining lifetime is untouched.
_TAG = (
    _OWNER
    + """
local cur = redis.call('GET', KEYS[1])
if not cur or owner(cur) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'KEEPTTL')
return 1
"""
)

# KEYS[1]=claim; ARGV[1]=claim token, ARGV[2]=ttl_ms -> 1 claimed (now or by this token before), 0.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 1 end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_UNCLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_ERRORS = (RedisError, OSError)


def _reason(exc: BaseException) -> str:
    # Only the class name: redis-py messages can carry the URL's host, and we keep logs uniform.
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return "redis_unavailable"
    return "redis_error"


class RedisLocks(Locks):
    """Leases in one Redis primary.

    :param url: ``redis://`` or ``rediss://`` URL (may carry a password; it is never logged).
    :param key_prefix: prepended to every key (``redis.key_prefix``).
    :param connect_timeout_s: TCP connect timeout.
    :param clock: wall time for the claim value (expiry itself is server-side).
    :param node: this process's node id, stored in fire claims for humans.
    :param command_timeout_s: per-command socket timeout (defaults to ``connect_timeout_s``).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        key_prefix: str,
        connect_timeout_s: float,
        clock: Clock,
        node: str,
        *,
        command_timeout_s: float | None = None,
        on_acquire: AcquireObserver | None = None,
    ) -> None:
        super().__init__(on_acquire=on_acquire)
        self._prefix = key_prefix
        self._clock = clock
        self._node = node
        self._client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s
            if command_timeout_s is not None
            else connect_timeout_s,
            # Two quick retries absorb a dropped idle connection; every script is safe to repeat.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        )
        self._acquire_script = self._client.register_script(_ACQUIRE)
        self._renew_script = self._client.register_script(_RENEW)
        self._release_script = self._client.register_script(_RELEASE)
        self._claim_script = self._client.register_script(_CLAIM)
        self._tag_script = self._client.register_script(_TAG)
        self._unclaim_script = self._client.register_script(_UNCLAIM)

    def lock_key(self, key: str) -> str:
        """The Redis key of lock ``key``."""
        return f"{self._prefix}{{{key}}}:lock"

    def fence_counter_key(self, key: str) -> str:
        """The Redis key of lock ``key``'s fence counter."""
        return f"{self._prefix}{{{key}}}:fence"

    def claim_key(self, job: str, due_ms: int) -> str:
        """The Redis key of the fire claim ``(job, due_ms)``."""
        return f"{self._prefix}{{{job}}}:fire:{due_ms}"

    async def _acquire(self, key: str, lease_ms: int) -> AcquireResult:
        return await self._acquire_token(key, lease_ms, secrets.token_hex(16))

    async def _acquire_token(self, key: str, lease_ms: int, token: str) -> AcquireResult:
        """Acquire with a caller-chosen token (``FallbackLocks`` uses one token in both)."""
        try:
            fence, holder = await self._acquire_script(
                keys=[self.lock_key(key), self.fence_counter_key(key)],
                args=[token, lease_ms, holder_text(self._node)],
            )
        except asyncio.CancelledError:
            # The script may have run with the reply lost to the cancellation.
            spawn_background(self._release_token(key, token))
            raise
        except _ERRORS as exc:
            log.debug("redis_acquire_failed", key=key, error=type(exc).__name__)
            return Unavailable(_reason(exc))
        if int(fence) > 0:
            return Acquired(
                Lease(key=key, token=token, fence=int(fence), backend=self.name, lease_ms=lease_ms)
            )
        return parse_holder(holder)

    async def renew(self, lease: Lease) -> bool:
        """See :meth:`Locks.renew`."""
        try:
            ok = await self._renew_script(
                keys=[self.lock_key(lease.key)],
                args=[lease.token, lease.lease_ms],
            )
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis renew failed: {type(exc).__name__}") from exc
        return int(ok) == 1

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Locks.release`."""
        return await release_surely(self._release_token, lease)

    async def _release_token(self, key: str, token: str) -> bool:
        try:
            ok = await self._release_script(keys=[self.lock_key(key)], args=[token])
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis release failed: {type(exc).__name__}") from exc
        return int(ok) == 1

    async def tag_run(self, lease: Lease, run_id: int) -> bool:
        """See :meth:`Locks.tag_run`: one script, owner-checked, with the lock's remaining TTL."""
        try:
            ok = await self._tag_script(
                keys=[self.lock_key(lease.key)],
                args=[lease.token, holder_text(self._node, run_id)],
            )
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis tag failed: {type(exc).__name__}") from exc
        return int(ok) == 1

    async def claim_fire(self, job: str, due_ms: int, ttl_ms: int) -> bool:
        """See :meth:`Locks.claim_fire`: ``SET NX PX`` made idempotent for this call's token."""
        check_key(job)
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        token = f"{self._node}|{self._clock.wall_ms()}|{secrets.token_hex(8)}"
        try:
            ok = await self._claim_script(keys=[self.claim_key(job, due_ms)], args=[token, ttl_ms])
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis claim failed: {type(exc).__name__}") from exc
        return int(ok) == 1

    async def release_fire(self, job: str, due_ms: int) -> bool:
        """See :meth:`Locks.release_fire`: delete the claim key if its token is this node's."""
        try:
            ok = await self._unclaim_script(
                keys=[self.claim_key(job, due_ms)], args=[f"{self._node}|"]
            )
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis unclaim failed: {type(exc).__name__}") from exc
        return int(ok) == 1

    async def ping(self) -> bool:
        """Whether the server answers a PING now (the client reconnects as needed)."""
        try:
            return bool(await self._client.ping())
        except _ERRORS:
            return False

    async def check_server(self) -> list[str]:
        """Deployment checks for start-up; each problem is logged as a warning and returned.

        Warns when ``maxmemory-policy`` is not ``noeviction`` (an evicted lock key is a lost lock),
        when the server is a replica, and when the settings cannot be read (managed services often
        disable ``CONFIG``).

        :raises ServiceUnavailable: when the server cannot be reached.
        """
        warnings: list[str] = []
        try:
            try:
                config: dict[Any, Any] = await self._client.config_get("maxmemory-policy")
                raw = config.get(b"maxmemory-policy", config.get("maxmemory-policy", b""))
                policy = raw.decode() if isinstance(raw, bytes) else str(raw)
                if policy != "noeviction":
                    warnings.append(
                        f"redis maxmemory-policy is {policy!r}, not 'noeviction': "
                        "an evicted lock key is a lost lock"
                    )
            except (RedisConnectionError, RedisTimeoutError, OSError):
                raise
            except RedisError as exc:
                warnings.append(f"cannot read redis maxmemory-policy ({type(exc).__name__})")
            info = await self._client.info("replication")
            if info.get("role") not in (None, "master"):
                warnings.append(
                    f"redis role is {info.get('role')!r}: locks need the primary, not a replica"
                )
        except _ERRORS as exc:
            raise ServiceUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
        for text in warnings:
            log.warning("redis.check", warning=text)
        return warnings

    async def close(self) -> None:
        """Finish background releases, then close the client's connections."""
        await super().close()
        await self._client.aclose()
