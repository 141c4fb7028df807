"""Score cache: the key, the in-memory LRU, and RedisCache against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import pytest

from service.serving.cache import CachedScore, MemoryCache, RedisCache, cache_key
from tests.service.redis_server import RedisServer, running_redis

T = TypeVar("T")

BASE = ("rev0001", "dreamprm-cof-v1", 2048, "Add two numbers.", ["def main():\n", "def add(a, b):\n"])


def score(x: float = 0.5) -> CachedScore:
    return CachedScore(logits=[x, -x], truncated=False, n_tokens=42)


# ---------------------------------------------------------------- cache_key


def test_cache_key_is_deterministic() -> None:
    assert cache_key(*BASE) == cache_key(*BASE)
    assert cache_key(*BASE) == cache_key(BASE[0], BASE[1], BASE[2], BASE[3], tuple(BASE[4]))
    assert cache_key(*BASE).startswith("dreamprm:v1:rev0001:")
    assert cache_key("a:b", "c", 1, "p", ["x"]) != cache_key("a", "b:c", 1, "p", ["x"])


@pytest.mark.parametrize("changed", [
    ("rev0002", *BASE[1:]),
    (BASE[0], "dreamprm-cof-v2", *BASE[2:]),
    (*BASE[:2], 4096, *BASE[3:]),
    (*BASE[:3], "Add two numbers!", BASE[4]),
    (*BASE[:4], ["def main():\n", "def add(a, c):\n"]),
    (*BASE[:4], ["def Main():\n", "def add(a, b):\n"]),
    (*BASE[:4], ["def main():\n"]),
    (*BASE[:4], [*BASE[4], ""]),
], ids=["revision", "template", "max_tokens", "problem", "last-step", "first-step", "fewer-steps",
        "extra-empty-step"])
def test_cache_key_changes_with_every_input(changed: tuple) -> None:  # type: ignore[type-arg]
    assert cache_key(*changed) != cache_key(*BASE)


def test_cache_key_tells_apart_different_splits_of_the_same_code() -> None:
    key = lambda steps: cache_key("r", "t", 1, "p", steps)  # noqa: E731
    assert key(["ab", "c"]) != key(["a", "bc"])
    assert key(["abc"]) != key(["ab", "c"])
    assert key([]) != key([""])
    assert key(["é"]) != key(["e"])


# ---------------------------------------------------------------- MemoryCache


async def test_memory_cache_round_trip() -> None:
    cache = MemoryCache(4)
    assert cache.backend == "memory"
    assert await cache.get("k") is None
    await cache.put("k", score(0.25))
    assert await cache.get("k") == score(0.25)
    await cache.put("k", score(0.75))  # overwrite, not a second entry
    assert await cache.get("k") == score(0.75)
    assert len(cache) == 1
    await cache.aclose()
    assert len(cache) == 0


async def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(2)
    await cache.put("a", score(1))
    await cache.put("b", score(2))
    assert await cache.get("a") == score(1)  # a is now the most recently used
    await cache.put("c", score(3))
    assert await cache.get("b") is None
    assert await cache.get("a") == score(1)
    assert await cache.get("c") == score(3)
    await cache.put("a", score(4))  # writing refreshes too: c is the oldest now
    await cache.put("d", score(5))
    assert [await cache.get(k) for k in "acd"] == [score(4), None, score(5)]
    assert len(cache) == 2


async def test_memory_cache_of_size_zero_stores_nothing() -> None:
    cache = MemoryCache(0)
    await cache.put("k", score())
    assert await cache.get("k") is None
    assert len(cache) == 0


# ---------------------------------------------------------------- RedisCache


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def redis_cache(redis_server: RedisServer) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_server.url, ttl_s=60, backoff_s=0.2)
    yield cache
    await cache.aclose()


async def within(awaitable: Awaitable[T], limit: float = 1.0) -> T:
    """Await and assert it took less than ``limit`` seconds (fails rather than hangs)."""
    started = time.perf_counter()
    result = await asyncio.wait_for(awaitable, limit)
    assert time.perf_counter() - started < limit
    return result


def sync_client(server: RedisServer):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(server.url, socket_timeout=1)


@pytest.mark.redis
async def test_redis_round_trip(redis_cache: RedisCache) -> None:
    assert redis_cache.backend == "redis"
    key = cache_key(*BASE)
    assert await redis_cache.get(key) is None
    await redis_cache.put(key, score(0.125))
    assert await redis_cache.get(key) == score(0.125)
    value = CachedScore(logits=[], truncated=True, n_tokens=0)
    await redis_cache.put("other", value)
    assert await redis_cache.get("other") == value
    assert redis_cache.available


@pytest.mark.redis
async def test_redis_entries_expire(redis_server: RedisServer, redis_cache: RedisCache) -> None:
    await redis_cache.put("k", score())
    client = sync_client(redis_server)
    try:
        assert 0 < client.ttl("k") <= 60
    finally:
        client.close()


@pytest.mark.redis
async def test_redis_crash_degrades_to_no_cache_and_recovers(redis_server: RedisServer,
                                                             redis_cache: RedisCache) -> None:
    await redis_cache.put("k", score())
    assert await redis_cache.get("k") == score()

    redis_server.kill()
    assert await within(redis_cache.get("k")) is None
    assert not redis_cache.available
    await within(redis_cache.put("k", score()))  # backing off: no error, no wait
    await asyncio.sleep(0.21)
    assert redis_cache.available
    await within(redis_cache.put("k", score()))  # tries again, fails again, does not raise
    assert await within(redis_cache.get("k")) is None
    assert not redis_cache.available

    redis_server.restart()  # a fresh, empty server on the same port
    await asyncio.sleep(0.21)
    assert redis_cache.available
    assert await within(redis_cache.get("k")) is None  # a miss, not a failure
    assert redis_cache.available
    await within(redis_cache.put("k", score(0.5)))
    assert await within(redis_cache.get("k")) == score(0.5)
    client = sync_client(redis_server)
    try:
        assert client.exists("k") == 1
    finally:
        client.close()


@pytest.mark.redis
async def test_redis_hung_server_times_out_quickly(redis_server: RedisServer,
                                                   redis_cache: RedisCache) -> None:
    await redis_cache.put("k", score())
    redis_server.pause()
    try:
        assert await within(redis_cache.get("k")) is None
        assert not redis_cache.available
        await asyncio.sleep(0.21)
        await within(redis_cache.put("k", score(0.9)))
    finally:
        redis_server.resume()
    await asyncio.sleep(0.21)
    await within(redis_cache.put("k", score(0.3)))
    assert await within(redis_cache.get("k")) == score(0.3)
