"""Score latency at three levels, side by side: raw forward, in-process engine, HTTP.

Two workloads, each made of LeetCode problems (prompt + canonical solution) from
``shared/data/leetcodedataset_train.jsonl`` chosen so that every item encodes to about 400
tokens (300-500; those closest to 400 are taken, all different problems):

* ``single``: one item;
* ``batch16``: 16 items, sent as ONE request (``{"items": [...16]}`` over HTTP).

Each workload is timed at three levels:

* ``forward``: ``PRMModel.forward`` on already-encoded items (padding + one forward pass);
* ``engine``: ``ScoringEngine.score`` in process (split, encode, micro-batcher, forward,
  aggregate), cache disabled (``cache_size=0``);
* ``http``: ``POST /v1/score`` to a live ``python -m service`` under uvicorn on loopback
  (``DREAMPRM_CACHE_SIZE=0``), through a keep-alive ``httpx.Client``.

Every level is warmed up first; then the repetitions are interleaved (each round runs every
level, in a rotating order) so that load drifting over time hits all levels alike. The in-process
model and the server use the same number of torch threads. Reported per level and workload:
median and p10/p90 latency in ms, tokens/s (real, unpadded tokens / median latency), forward
passes per request and the time spent inside them (read from the engine's and the server's
Prometheus metrics, so ``latency - forward`` is the overhead of that level). Results go to
``benchmarks/results/score_<model>_<dtype>.json``.

    .venv/bin/python -m benchmarks.bench_score --model tiny
    .venv/bin/python -m benchmarks.bench_score --model smollm2 --checkpoint /tmp/smollm2-prm --dtype bfloat16

The smollm2 checkpoint comes from ``benchmarks/make_smollm2_checkpoint.py`` (untrained head;
latency only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    LEETCODE_TRAIN,
    RESULTS,
    machine_info,
    now_iso,
    read_jsonl,
    summarize,
    table,
    write_json,
)
from service.encoding import Encoded
from service.errors import PRMError
from service.model import PRMModel
from service.schemas import ScoreBatchRequest, ScoreItem
from service.serving.engine import ScoringEngine
from service.settings import Settings
from service.steps import split_code

TARGET_TOKENS = 400
TOKEN_RANGE = (300, 500)
BATCH = 16  # default batch size (--batch)
B1_TARGET = 0.85  # issue #6: service (HTTP) tokens/s >= 0.85 x backbone forward tokens/s at batch 8
LEVELS = ("forward", "engine", "http")
PASSES = "dreamprm_batch_size_count"  # one observation per forward pass
FORWARD_SECONDS = "dreamprm_forward_seconds_sum"
DEFAULT_REPEATS = {"tiny": 30, "smollm2": 4}  # rounds; smollm2 bf16 on 2 idle cores: about 2 minutes


@dataclass(frozen=True, slots=True)
class Item:
    problem_id: str
    item: ScoreItem
    encoded: Encoded


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # wall-clock latency of the call alone
    passes: float  # forward passes it caused
    forward_seconds: float  # time inside those forward passes


@dataclass(slots=True)
class Series:
    seconds: list[float] = field(default_factory=list)
    passes: list[float] = field(default_factory=list)
    forward_seconds: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.seconds.append(sample.seconds)
        self.passes.append(sample.passes)
        self.forward_seconds.append(sample.forward_seconds)


def pick_items(model: PRMModel, n: int) -> list[Item]:
    """The ``n`` problems whose prompt + canonical solution encode closest to TARGET_TOKENS."""
    found: list[tuple[int, Item]] = []
    for row in read_jsonl(LEETCODE_TRAIN):
        problem, code = str(row.get("prompt") or ""), str(row.get("canonical_solution") or "")
        if not problem.strip() or not code.strip():
            continue
        try:
            steps = [s.text for s in split_code(code, "python").steps]
            enc = model.encode(problem, steps)
        except PRMError:
            continue
        if enc.truncated or not TOKEN_RANGE[0] <= enc.n_tokens <= TOKEN_RANGE[1]:
            continue
        found.append((abs(enc.n_tokens - TARGET_TOKENS),
                      Item(str(row["id"]), ScoreItem(problem=problem, code=code, language="python"), enc)))
    if len(found) < n:
        raise SystemExit(f"only {len(found)} problems encode to {TOKEN_RANGE} tokens; need {n}")
    found.sort(key=lambda pair: (pair[0], pair[1].problem_id))
    return [item for _, item in found[:n]]


class Levels:
    """One callable per (level, workload), returning a ``Sample``."""

    def __init__(self, model: PRMModel, engine: ScoringEngine, runner: asyncio.Runner, client: httpx.Client,
                 single: list[Item], batch: list[Item]) -> None:
        self.model, self.engine, self.runner, self.client = model, engine, runner, client
        self.work = {"single": single, f"batch{len(batch)}": batch}

    def call(self, level: str, workload: str) -> Callable[[], Sample]:
        items = self.work[workload]
        if level == "forward":
            encoded = [it.encoded for it in items]

            def forward() -> Sample:
                t0 = time.perf_counter()
                out = self.model.forward(encoded)
                seconds = time.perf_counter() - t0
                assert len(out) == len(encoded)
                return Sample(seconds, 1.0, seconds)

            return forward
        if level == "engine":
            req: ScoreItem | ScoreBatchRequest = items[0].item if len(items) == 1 else \
                ScoreBatchRequest(items=[it.item for it in items])

            async def score() -> tuple[float, Any]:
                t0 = time.perf_counter()
                resp = await self.engine.score(req)
                return time.perf_counter() - t0, resp

            def engine() -> Sample:
                before = self._engine_counters()
                seconds, resp = self.runner.run(score())
                assert len(getattr(resp, "items", [resp])) == len(items)
                after = self._engine_counters()
                return Sample(seconds, after[0] - before[0], after[1] - before[1])

            return engine
        body = items[0].item.model_dump(exclude_none=True) if len(items) == 1 else \
            {"items": [it.item.model_dump(exclude_none=True) for it in items]}

        def http() -> Sample:
            before = self._http_counters()
            t0 = time.perf_counter()
            resp = self.client.post("/v1/score", json=body)
            seconds = time.perf_counter() - t0
            resp.raise_for_status()
            data = resp.json()
            results = data.get("items", [data])
            assert len(results) == len(items) and not any(r["cached"] for r in results)
            after = self._http_counters()
            return Sample(seconds, after[0] - before[0], after[1] - before[1])

        return http

    def _engine_counters(self) -> tuple[float, float]:
        """(forward passes, seconds in forward passes) so far, from the engine's metrics."""
        registry = self.engine.metrics.registry
        return (registry.get_sample_value(PASSES) or 0.0, registry.get_sample_value(FORWARD_SECONDS) or 0.0)

    def _http_counters(self) -> tuple[float, float]:
        """The same counters, from the server's ``/metrics``."""
        values = {PASSES: 0.0, FORWARD_SECONDS: 0.0}
        for line in self.client.get("/metrics").text.splitlines():
            name, _, value = line.partition(" ")
            if name in values:
                values[name] = float(value)
        return values[PASSES], values[FORWARD_SECONDS]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tests.live import live_server
    from tests.tiny import save_tiny_prm

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp_name:
        tmp = Path(tmp_name)
        if args.model == "tiny":
            checkpoint = save_tiny_prm(tmp / "tiny-prm")
        else:
            if args.checkpoint is None:
                raise SystemExit("--model smollm2 needs --checkpoint DIR "
                                 "(build one with benchmarks/make_smollm2_checkpoint.py)")
            checkpoint = args.checkpoint
        t0 = time.perf_counter()
        model = PRMModel.load(checkpoint, device=args.device, dtype=args.dtype, threads=threads)
        print(f"loaded {model.name} ({model.revision}) as {args.dtype} in {time.perf_counter() - t0:.1f} s, "
              f"{threads} torch threads", flush=True)
        items = pick_items(model, args.batch + 1)
        single, batch = items[:1], items[1:]
        print(f"single: {single[0].problem_id} ({single[0].encoded.n_tokens} tokens); batch of {args.batch}: "
              f"{min(i.encoded.n_tokens for i in batch)}-{max(i.encoded.n_tokens for i in batch)} tokens each, "
              f"{sum(i.encoded.n_tokens for i in batch)} in all", flush=True)

        settings = Settings(checkpoint=checkpoint, device=args.device, dtype=args.dtype, threads=threads,
                            cache_size=0, redis_url=None)
        env = {"DREAMPRM_CACHE_SIZE": "0", "DREAMPRM_DTYPE": args.dtype, "DREAMPRM_DEVICE": args.device,
               "DREAMPRM_THREADS": str(threads), "DREAMPRM_REDIS_URL": "", "DREAMPRM_LOG_LEVEL": "WARNING"}
        with asyncio.Runner() as runner, live_server(checkpoint, tmp / "server.log", **env) as url, \
                httpx.Client(base_url=url, timeout=600) as client:
            engine = ScoringEngine(model, settings)
            runner.run(engine.open())
            try:
                levels = Levels(model, engine, runner, client, single, batch)
                samples = measure(levels, workloads_of(args.batch), args.repeats, args.single_repeats, args.warmup)
            finally:
                runner.run(engine.aclose())
    workloads = workloads_of(args.batch)
    tokens = {"single": single[0].encoded.n_tokens, workloads[1]: sum(i.encoded.n_tokens for i in batch)}
    padded = {"single": single[0].encoded.n_tokens,
              workloads[1]: args.batch * max(i.encoded.n_tokens for i in batch)}
    results = []
    for workload in workloads:
        for level in LEVELS:
            s = samples[(level, workload)]
            stats = summarize(s.seconds)
            results.append({
                "level": level, "workload": workload, "items": len(levels.work[workload]),
                "tokens": tokens[workload], "padded_tokens": padded[workload], "repeats": len(s.seconds),
                **{f"{k}_ms": v * 1000 for k, v in stats.items() if k != "n"},
                "tokens_per_s": tokens[workload] / stats["median"],
                "forward_passes_median": statistics.median(s.passes),
                "forward_ms_median": statistics.median(s.forward_seconds) * 1000,
                "overhead_ms_median": statistics.median(
                    [(a - b) * 1000 for a, b in zip(s.seconds, s.forward_seconds, strict=True)]),
                "samples_ms": [x * 1000 for x in s.seconds],
                "forward_passes": s.passes,
                "forward_samples_ms": [x * 1000 for x in s.forward_seconds],
            })
    by = {(r["level"], r["workload"]): r["tokens_per_s"] for r in results}
    ratio = {wl: by[("http", wl)] / by[("forward", wl)] for wl in workloads}
    return {
        "b1_service_over_backbone": {"ratio_tokens_per_s": ratio, "target_at_batch8": B1_TARGET},
        "model": args.model, "checkpoint_name": model.name, "checkpoint_revision": model.revision,
        "device": args.device, "dtype": args.dtype, "threads": threads,
        "settings": {"max_wait_ms": settings.max_wait_ms, "max_batch_size": settings.max_batch_size,
                     "max_batch_tokens": settings.max_batch_tokens, "cache_size": 0},
        "items": {"single": single[0].problem_id, "batch": [i.problem_id for i in batch],
                  "tokens": tokens, "padded_tokens": padded},
        "repeats": {"rounds": args.repeats, "single_per_round": args.single_repeats, "warmup": args.warmup},
        "results": results,
    }


def workloads_of(batch: int) -> tuple[str, str]:
    return ("single", f"batch{batch}")


def measure(levels: Levels, workloads: tuple[str, str], rounds: int, single_per_round: int,
            warmup: int) -> dict[tuple[str, str], Series]:
    calls = {(lv, wl): levels.call(lv, wl) for lv in LEVELS for wl in workloads}
    t0 = time.perf_counter()
    for (lv, wl), fn in calls.items():
        for _ in range(warmup if wl == "single" else max(1, warmup // 2)):
            fn()
        print(f"  warmed up {lv}/{wl} ({time.perf_counter() - t0:.1f} s)", flush=True)
    samples = {key: Series() for key in calls}
    for r in range(rounds):
        order = LEVELS[r % len(LEVELS):] + LEVELS[: r % len(LEVELS)]  # rotate which level goes first
        for lv in order:
            for wl in workloads:
                for _ in range(single_per_round if wl == "single" else 1):
                    samples[(lv, wl)].add(calls[(lv, wl)]())
        if (r + 1) % max(1, rounds // 5) == 0 or r + 1 == rounds:
            print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t0:.1f} s)", flush=True)
    return samples


def print_table(report: dict[str, Any]) -> None:
    rows = []
    for r in report["results"]:
        rows.append([f"{r['workload']} / {r['level']}", str(r["items"]), str(r["tokens"]), str(r["repeats"]),
                     f"{r['median_ms']:.1f}", f"{r['p10_ms']:.1f}", f"{r['p90_ms']:.1f}",
                     f"{r['tokens_per_s']:,.0f}", f"{r['forward_passes_median']:g}",
                     f"{r['forward_ms_median']:.1f}", f"{r['overhead_ms_median']:.1f}"])
    m = report["machine"]
    print(f"\n{report['checkpoint_name']} ({report['model']}), {report['device']} {report['dtype']}, "
          f"{report['threads']} torch threads; {m['cpu_model']}, {m['cpu_count']} CPUs, torch {m['torch']}; "
          f"load {m['loadavg_at_start']}")
    print(table(["workload / level", "items", "tokens", "n", "median ms", "p10 ms", "p90 ms", "tokens/s",
                 "passes", "fwd ms", "overhead ms"], rows))
    print("fwd ms: median time inside forward passes (engine/server metrics); overhead ms: median of "
          "latency - fwd, per call")
    for wl, r in report["b1_service_over_backbone"]["ratio_tokens_per_s"].items():
        print(f"B1 {wl}: HTTP tokens/s = {r:.3f} x backbone forward tokens/s (target >= {B1_TARGET} at batch 8)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="score latency: forward vs engine vs HTTP, 1 and 16 items")
    parser.add_argument("--model", choices=["tiny", "smollm2"], required=True)
    parser.add_argument("--checkpoint", type=Path, help="PRM checkpoint directory (required for smollm2)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, help="interleaved rounds, one batch timing per level each "
                                                    "(default: tiny 30, smollm2 4)")
    parser.add_argument("--single-repeats", type=int, default=3,
                        help="single-item timings per level per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed single-item calls per level before timing; the batch gets half (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads, in process and in the server "
                                                    "(default: torch's default)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"items in the batch workload (default {BATCH})")
    parser.add_argument("--out", type=Path, help="JSON output (default: benchmarks/results/score_<model>_<dtype>"
                                                 "[_batch<N>].json)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.model]

    machine = machine_info(torch_info=True)
    started = time.perf_counter()
    report = {"benchmark": "score", "date": now_iso(), **run(args)}
    machine["loadavg_at_end"] = list(os.getloadavg())
    report["machine"] = machine
    report["wall_s"] = time.perf_counter() - started
    print_table(report)
    print(f"total {report['wall_s']:.0f} s")
    suffix = "" if args.batch == BATCH else f"_batch{args.batch}"
    write_json(args.out or RESULTS / f"score_{args.model}_{args.dtype}{suffix}.json", report)


if __name__ == "__main__":
    main()
