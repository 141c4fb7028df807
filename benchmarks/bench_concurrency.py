"""B3: concurrent clients against a live server — throughput, latency percentiles, errors,
batch sizes, and the server's memory over time.

A real ``python -m service`` (uvicorn, loopback, score cache off so every request runs the model)
serves ``POST /v1/score``. For each concurrency level (default 1, 8, 32, 64) that many closed-loop
clients (one request in flight each, the next sent when the reply arrives) run for a fixed time;
the last level runs longer (default 5 minutes) to show whether memory stays flat. Items are LeetCode
problems with their canonical solutions from ``shared/data/leetcodedataset_train.jsonl`` (about
400 tokens each), taken round robin.

Per level: requests/s, tokens/s, p50/p95/p99 latency, errors by status, the distribution of forward
pass sizes (from the server's Prometheus histogram), and the server's RSS (sampled every second from
``/proc``: start, peak, end, and the slope of a line fitted over the level's second half).

    .venv/bin/python -m benchmarks.bench_concurrency                       # the default checkpoint, bf16
    .venv/bin/python -m benchmarks.bench_concurrency --model tiny --duration 20 --long 60

Targets (issue #6), at 64 clients: no errors, p99 <= 4 x p50, memory flat over 5 minutes.
Output: ``benchmarks/results/concurrency_<model>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, percentile, read_jsonl, table, write_json
from service.settings import DEFAULT_CHECKPOINT
from tests.live import live_server_process

LEVELS = (1, 8, 32, 64)
P99_OVER_P50_MAX = 4.0
ITEM_CHARS = (900, 1600)  # prompt + solution characters: about 300-500 tokens


def pick_items(n: int) -> list[dict[str, str]]:
    """``n`` LeetCode (problem, reference solution) items of moderate size, in file order."""
    items = []
    for row in read_jsonl(LEETCODE_TRAIN):
        problem, code = str(row.get("prompt") or ""), str(row.get("canonical_solution") or "")
        if code.strip() and ITEM_CHARS[0] <= len(problem) + len(code) <= ITEM_CHARS[1]:
            items.append({"problem": problem, "code": code})
        if len(items) == n:
            break
    return items


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def batch_histogram(metrics: str) -> dict[str, float]:
    """Cumulative bucket counts of ``dreamprm_batch_size`` (items per forward pass)."""
    out = {}
    for m in re.finditer(r'^dreamprm_batch_size_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', metrics, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def histogram_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Passes per bucket (not cumulative) between two scrapes: ``{"<=1": n, "2": n, "3-4": n, ...}``."""
    edges = [*sorted((k for k in after if k != "+Inf"), key=float), "+Inf"]
    out, prev_count, prev_edge = {}, 0.0, 0.0
    for edge in edges:
        count = after.get(edge, 0.0) - before.get(edge, 0.0)
        hi = float(edge)
        label = f"{int(prev_edge) + 1}-{int(hi)}" if hi != float("inf") else f">{int(prev_edge)}"
        if hi == 1.0:
            label = "1"
        out[label] = round(count - prev_count)
        prev_count, prev_edge = count, hi
    return {k: v for k, v in out.items() if v}


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over time, per minute."""
    if len(samples) < 3:
        return 0.0
    ts, ys = [t for t, _ in samples], [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


async def run_level(url: str, pid: int, items: list[dict[str, str]], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    tokens: list[int] = []
    errors: dict[str, int] = {}
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        before = batch_histogram((await http.get("/metrics")).text)
        start = time.perf_counter()
        deadline = start + seconds
        counter = iter(range(1 << 62))

        async def client() -> None:
            while time.perf_counter() < deadline:
                item = items[next(counter) % len(items)]
                t0 = time.perf_counter()
                try:
                    reply = await http.post("/v1/score", json=item)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    await asyncio.sleep(0.1)  # no busy loop against a dead server
                    continue
                if reply.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                    tokens.append(int(reply.json()["n_tokens"]))
                else:
                    errors[str(reply.status_code)] = errors.get(str(reply.status_code), 0) + 1

        async def sample_memory() -> None:
            while time.perf_counter() < deadline:
                memory.append((time.perf_counter() - start, rss_mb(pid)))
                await asyncio.sleep(1.0)

        await asyncio.gather(sample_memory(), *(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start  # includes the last requests' tail past the deadline
        after = batch_histogram((await http.get("/metrics")).text)
    half = [s for s in memory if s[0] >= seconds / 2]
    rss = [m for _, m in memory]
    if not latencies:  # keep the other levels' results: report this one as all errors
        latencies = [float("nan")]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": errors,
        "requests_per_s": len(latencies) / elapsed, "tokens_per_s": sum(tokens) / elapsed,
        "latency_ms": {"p50": p50 * 1000, "p95": percentile(latencies, 95) * 1000, "p99": p99 * 1000,
                       "max": max(latencies) * 1000},
        "p99_over_p50": p99 / p50,
        "batch_sizes": histogram_delta(before, after),
        "rss_mb": {"start": rss[0], "peak": max(rss), "end": rss[-1],
                   "slope_second_half_mb_per_min": slope_mb_per_min(half)},
        "rss_samples": [[round(t, 1), round(m, 1)] for t, m in memory],
    }


def env_setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from the command line."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="B3: concurrent clients against a live server")
    parser.add_argument("--model", choices=["default", "tiny"], default="default",
                        help="the default checkpoint (SmolLM2-135M PRM) or a tiny random PRM")
    parser.add_argument("--checkpoint", type=Path, help="another checkpoint directory")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level (default 60)")
    parser.add_argument("--long", type=float, default=300.0, help="seconds for the last level (default 300)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE", type=env_setting,
                        help="more settings for the server, e.g. DREAMPRM_HEAP_TRIM_S=0")
    args = parser.parse_args(argv)

    machine = machine_info(torch_info=True)
    items = pick_items(64)
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp_name:
        tmp = Path(tmp_name)
        if args.model == "tiny":
            from tests.tiny import save_tiny_prm

            checkpoint = save_tiny_prm(tmp / "tiny")
        else:
            checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
        env = {"DREAMPRM_DTYPE": args.dtype, "DREAMPRM_THREADS": str(os.cpu_count() or 1),
               "DREAMPRM_CACHE_SIZE": "0", "DREAMPRM_REDIS_URL": "", "DREAMPRM_LOG_LEVEL": "WARNING",
               "DREAMPRM_MAX_QUEUE": "1024"}  # queue: 64 clients x up to 16 items
        env |= dict(args.server_env)
        log = args.server_log or tmp / "server.log"
        with live_server_process(checkpoint, log, ready_timeout_s=300, **env) as (url, proc):
            results = []
            for i, clients in enumerate(args.levels):
                seconds = args.long if i == len(args.levels) - 1 else args.duration
                print(f"{clients} clients for {seconds:.0f} s ...", flush=True)
                results.append(asyncio.run(run_level(url, proc.pid, items, clients, seconds)))
    machine["loadavg_at_end"] = list(os.getloadavg())
    last = results[-1]
    report = {
        "benchmark": "concurrency", "date": now_iso(), "machine": machine, "checkpoint": str(checkpoint),
        "dtype": args.dtype, "cache": "off", "server_env": [f"{k}={v}" for k, v in args.server_env],
        "items": len(items), "levels": results,
        "targets": {"clients": last["clients"], "errors": sum(last["errors"].values()),
                    "p99_over_p50": last["p99_over_p50"], "p99_over_p50_max": P99_OVER_P50_MAX,
                    "rss_slope_mb_per_min": last["rss_mb"]["slope_second_half_mb_per_min"],
                    "minutes": last["seconds"] / 60},
    }
    rows = [[str(r["clients"]), f"{r['seconds']:.0f}", str(r["requests"]), str(sum(r["errors"].values())),
             f"{r['requests_per_s']:.2f}", f"{r['tokens_per_s']:,.0f}", f"{r['latency_ms']['p50']:.0f}",
             f"{r['latency_ms']['p95']:.0f}", f"{r['latency_ms']['p99']:.0f}", f"{r['p99_over_p50']:.2f}",
             " ".join(f"{k}:{v}" for k, v in r["batch_sizes"].items()),
             f"{r['rss_mb']['start']:.0f}/{r['rss_mb']['peak']:.0f}/{r['rss_mb']['end']:.0f}",
             f"{r['rss_mb']['slope_second_half_mb_per_min']:+.2f}"] for r in results]
    print(f"\n{checkpoint.name}, {args.dtype}, cache off; {machine['cpu_model']}, {machine['cpu_count']} CPUs")
    print(table(["clients", "s", "requests", "errors", "req/s", "tok/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50",
                 "items per forward pass: passes", "RSS MB start/peak/end", "RSS MB/min (2nd half)"], rows))
    name = args.model if args.checkpoint is None else f"checkpoint_{checkpoint.name}"
    write_json(args.out or RESULTS / f"concurrency_{name}.json", report)


if __name__ == "__main__":
    main()
