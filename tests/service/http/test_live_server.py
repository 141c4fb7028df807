"""Against the real server (uvicorn on loopback, the tiny checkpoint): hostile input never
gives a 5xx, and the server stays healthy; Redis dying mid-run costs no request."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tests.service.redis_server import running_redis

GOOD = {"problem": "Print 2.", "code": "def main():\n    print(helper())\n\ndef helper():\n    return 2\n"}


def _hostile_requests() -> list[tuple[str, bytes, int]]:
    """(name, raw JSON body, expected status) sent to /v1/score."""
    def body(**fields: object) -> bytes:
        return json.dumps({"problem": "p", **fields}).encode()

    return [
        ("empty code", body(code=""), 422),
        ("only comments", body(code="# nothing\n# here\n"), 400),
        ("5 MB of code", body(code="x = 1\n" * 900_000), 413),
        ("10,000 functions", body(code="".join(f"def f{i}():\n    return {i}\n" for i in range(10_000))), 413),
        ("deep nesting", body(code="x = " + "-" * 100_000 + "1\n"), 400),
        ("deep boolean nesting", body(code="x = " + "not " * 100_000 + "y\n"), 400),
        ("NUL bytes", body(code="def f():\n    return '\x00'\n"), 400),
        ("unknown language", body(code="x = 1", language="brainfuck"), 422),
        ("wrong JSON types", b'{"problem": ["p"], "code": {"a": 1}, "language": 3}', 422),
        ("batch over the limit", json.dumps({"items": [GOOD] * 65}).encode(), 413),
        ("not JSON", b"def main(): pass", 400),
        ("JSON scalar", b"42", 422),
        ("first step over the token budget", body(code="x = '" + "a b " * 20_000 + "'\n"), 413),
        ("huge number", b'{"problem": "p", "code": "x = 1", "aggregation": 1e999}', 400),  # number_too_large
        ("lone surrogate", b'{"problem": "\\ud800", "code": "x = 1\\n"}', 400),  # invalid_encoding
    ]


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("live") / "server.log"
    with live_server(tiny_checkpoint, log, DREAMPRM_MAX_TOKENS="1024") as url:
        yield url


@pytest.mark.parametrize(("name", "raw", "status"), _hostile_requests(), ids=lambda v: v if isinstance(v, str) else "")
def test_hostile_input_gets_a_clear_4xx(server: str, name: str, raw: bytes, status: int) -> None:
    r = httpx.post(f"{server}/v1/score", content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, (name, r.text[:500])
    if status >= 400:
        error = r.json()["error"]
        assert error["message"] and error["type"] and error["request_id"]
        assert "Traceback" not in r.text
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200


def test_split_hostile_input(server: str) -> None:
    for raw, status in [(b'{"code": "' + b"def f(): pass\\n" * 10_000 + b'"}', 413),
                        (b'{"code": "x", "language": "cobol"}', 422),
                        (b'{"code": "\\u0000"}', 400)]:
        r = httpx.post(f"{server}/v1/split", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text[:300]


def test_server_still_scores_after_abuse(server: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{server}/v1/score", json={**GOOD, "problem": f"P{i}"},
                                                   timeout=60).status_code, range(32)))
    assert codes == [200] * 32
    assert httpx.get(f"{server}/ready").json()["ready"] is True
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="500"' not in metrics


@pytest.mark.redis
def test_redis_dying_mid_run_loses_no_request(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import redis

    with running_redis() as rds, live_server(tiny_checkpoint, tmp_path / "server.log",
                                             DREAMPRM_REDIS_URL=rds.url) as url:
        def call(i: int) -> dict:  # type: ignore[type-arg]
            r = httpx.post(f"{url}/v1/score", json={**GOOD, "problem": f"P{i % 10}"}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        with ThreadPoolExecutor(4) as pool:
            before = list(pool.map(call, range(20)))
        assert any(b["cached"] for b in before)  # the second round of P0..P9 came from Redis
        assert len(redis.Redis.from_url(rds.url).keys("dreamprm:*")) == 10
        with ThreadPoolExecutor(4) as pool:
            during = pool.map(call, range(20, 60))
            rds.kill()  # mid-run
            during = list(during)
        after = [call(i) for i in range(60, 80)]
        assert len(during) == 40 and len(after) == 20
        assert httpx.get(f"{url}/ready").json()["ready"] is True
        assert "redis cache unavailable" in (tmp_path / "server.log").read_text()
