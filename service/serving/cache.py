"""Score cache: Redis when configured (shared by replicas), a bounded in-memory LRU otherwise.

Imports only the stdlib and redis. A Redis failure degrades to "no cache", never to an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedScore:
    logits: list[float]
    truncated: bool
    n_tokens: int
    outcome: bool = False  # one score for the whole program (an outcome reward model)


def cache_key(revision: str, template: str, max_tokens: int, problem: str, steps: Sequence[str]) -> str:
    """One key for (checkpoint hash, template, token budget, problem, steps).

    Every field is length-prefixed into one sha256, so no two inputs share a key, and different
    splits of the same code differ. The revision stays readable to let operators purge by model.
    """
    digest = hashlib.sha256()
    for field in (revision, template, str(max_tokens), problem, *steps):
        raw = field.encode("utf-8", "surrogatepass")
        digest.update(len(raw).to_bytes(8, "little") + raw)
    digest.update(len(steps).to_bytes(8, "little"))
    return f"dreamprm:v1:{revision}:{digest.hexdigest()}"


class ScoreCache(Protocol):
    backend: str

    async def get(self, key: str) -> CachedScore | None: ...

    async def put(self, key: str, value: CachedScore) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """Bounded LRU in process memory (``size`` entries; 0 disables)."""

    backend = "memory"

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, CachedScore] = OrderedDict()

    async def get(self, key: str) -> CachedScore | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    async def put(self, key: str, value: CachedScore) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    async def aclose(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis-backed cache with short timeouts; after a failure it stays off for ``backoff_s``."""

    backend = "redis"

    def __init__(self, url: str, *, ttl_s: int, timeout_s: float = 0.25, backoff_s: float = 2.0) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                               socket_connect_timeout=timeout_s)
        self._ttl = ttl_s
        self._backoff = backoff_s
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def get(self, key: str) -> CachedScore | None:
        if not self.available:
            return None
        try:
            raw = await self._client.get(key)
            return None if raw is None else CachedScore(**json.loads(raw))
        except (RedisError, OSError, ValueError, TypeError) as exc:  # any failure means "no cache"
            self._fail(exc)
            return None

    async def put(self, key: str, value: CachedScore) -> None:
        if not self.available:
            return
        try:
            await self._client.set(key, json.dumps(asdict(value)), ex=self._ttl)
        except (RedisError, OSError) as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        logger.warning("redis cache unavailable for %.1fs: %s", self._backoff, exc)
        self._down_until = time.monotonic() + self._backoff

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("closing redis: %s", exc)
