"""B4: score-cache hit latency over HTTP, in-memory LRU vs Redis, against a miss (cache off).

A live ``python -m service`` on loopback scores the same item again and again: with
``DREAMPRM_CACHE_SIZE=0`` every call is a miss (forward pass), with the LRU or Redis every call
after the first is a hit. Latency is measured by a keep-alive ``httpx.Client``; ``cached`` in the
response is checked. Output: ``results/cache.json``.

    .venv/bin/python -m benchmarks.bench_cache --checkpoint /tmp/smollm2-prm
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RESULTS, machine_info, now_iso, summarize, table, write_json

ITEM = {"problem": "Read two integers and print their sum.",
        "code": "def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n\n"
                "def add(a, b):\n    return a + b\n\n\nmain()\n"}


def measure(url: str, calls: int, expect_cached: bool) -> dict[str, float]:
    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        client.post("/v1/score", json=ITEM).raise_for_status()  # fills the cache
        for _ in range(calls):
            started = time.perf_counter()
            r = client.post("/v1/score", json=ITEM)
            times.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            if r.json()["cached"] != expect_cached:
                raise SystemExit(f"expected cached={expect_cached}: {r.json()['cached']}")
    s = summarize(times)
    return {**s, "p95": sorted(times)[int(0.95 * (len(times) - 1))]}


def main(argv: list[str] | None = None) -> None:
    from tests.live import live_server
    from tests.service.redis_server import RedisServer, redis_binary
    from tests.tiny import save_tiny_prm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a tiny random PRM")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "cache", "date": now_iso(), "machine": machine_info(), "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_tiny_prm(Path(tmp) / "tiny-prm")
        redis = RedisServer(redis_binary())
        redis.start()
        try:
            setups = {"miss (cache off)": ({"DREAMPRM_CACHE_SIZE": "0"}, False, max(20, args.calls // 10)),
                      "hit, memory LRU": ({"DREAMPRM_CACHE_SIZE": "8192"}, True, args.calls),
                      "hit, Redis": ({"DREAMPRM_REDIS_URL": redis.url}, True, args.calls)}
            for name, (env, cached, calls) in setups.items():
                with live_server(checkpoint, Path(tmp) / "server.log", DREAMPRM_LOG_LEVEL="WARNING", **env) as url:
                    report["rows"][name] = measure(url, calls, cached)
                print(f"  {name}: p50 {report['rows'][name]['median']:.2f} ms", flush=True)
        finally:
            redis.kill()
    report["checkpoint"] = str(args.checkpoint or "tiny")
    print(table(["setup", "p50 ms", "p95 ms", "calls"],
                [[k, f"{v['median']:.2f}", f"{v['p95']:.2f}", str(int(v["n"]))] for k, v in report["rows"].items()]))
    write_json(RESULTS / "cache.json", report)


if __name__ == "__main__":
    main()
