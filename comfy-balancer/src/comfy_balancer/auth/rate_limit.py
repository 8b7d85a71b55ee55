"""Submits per minute per API key: a token bucket in Redis, shared by every balancer replica.

The bucket holds up to the per-minute limit (a burst of that size is allowed after a quiet
minute) and refills continuously at limit / 60 per second. One Lua script takes a token or
says how long until one is there, so replicas never race.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.errors import ComfyStackError
from comfy_shared.lua import LuaScript
from comfy_shared.redis_keys import RedisKeys

# Returns {1 or 0 (taken or not), tokens left (floor), ms until the next token}.
_TAKE: Final = LuaScript(
    keys=("bucket",),
    args=("capacity", "now_ms"),
    body="""
local capacity = tonumber(ARG.capacity)
local now = tonumber(ARG.now_ms)
local rate = capacity / 60000
local state = redis.call('HMGET', KEY.bucket, 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local taken = 0
if tokens >= 1 then tokens = tokens - 1; taken = 1 end
redis.call('HSET', KEY.bucket, 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEY.bucket, 120000)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / rate) end
return {taken, math.floor(tokens), wait}
""",
)


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int
    remaining: int
    reset_s: int
    """Seconds until a submit would be allowed again (0: now)."""

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit header fields."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimited(ComfyStackError):
    def __init__(self, quota: Quota) -> None:
        super().__init__(
            f"this API key may submit {quota.limit} tasks per minute; retry in {quota.reset_s}s"
        )
        self.quota = quota
        self.retry_after_s = max(1, quota.reset_s)


class SubmitRateLimiter:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._take = _TAKE.register(redis)

    async def take(self, key_id: str, per_minute: int) -> Quota:
        """Take one submit from the key's bucket; raises RateLimited when it is empty."""
        taken, remaining, wait_ms = await self._take(
            keys={"bucket": self._keys.key_bucket(key_id)},
            args={"capacity": per_minute, "now_ms": now_ms()},
        )
        quota = Quota(limit=per_minute, remaining=int(remaining), reset_s=-(-int(wait_ms) // 1000))
        if not taken:
            raise RateLimited(quota)
        return quota
