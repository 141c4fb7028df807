"""PRM scores of every candidate in ``example_pools``, through the service's own scoring code, cached per checkpoint.

```sh
nice -n 5 .venv/bin/python -m benchmarks.prm_pool_scores            # default checkpoint, 2 threads
.venv/bin/python -m benchmarks.prm_pool_scores --checkpoint DIR --pools apps_stdin_all
```

Each candidate is scored by ``ScoringEngine.score_item`` (split, encode, micro-batcher, forward, all five
aggregates), the candidates of one problem submitted together so the batcher shares the statement's
prefix. Results go to ``results/examples_prm/<checkpoint>-<revision[:12]>.json`` keyed by
``candidate_key(problem, code)``; the file is rewritten after every problem, so a killed run resumes, and
a retrained checkpoint (new revision) gets a new file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info, now_iso
from benchmarks.example_pools import PoolProblem, candidate_key, load_pools
from service.errors import InputTooLong, InvalidInput
from service.schemas import ScoreItem
from service.settings import DEFAULT_CHECKPOINT, Settings

CACHE_DIR = RESULTS / "examples_prm"


def cache_path(checkpoint: Path, revision: str) -> Path:
    return CACHE_DIR / f"{checkpoint.resolve().name}-{revision[:12]}.json"


def read_cache(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def revision_of(checkpoint: Path) -> str:
    """The checkpoint's revision without loading the network (the same hash ``PRMModel`` reports)."""
    from service.checkpoints.manifest import checkpoint_sha256

    return checkpoint_sha256(checkpoint)[:16]


async def _score_problem(engine: Any, pp: PoolProblem, scores: dict[str, Any]) -> int:
    todo = [c.code for c in pp.candidates if candidate_key(pp.problem.prompt, c.code) not in scores]

    async def one(code: str) -> dict[str, Any]:
        if not code.strip():
            return {"error": "empty program"}
        try:
            r = await engine.score_item(ScoreItem(problem=pp.problem.prompt, code=code))
        except (InvalidInput, InputTooLong) as exc:
            return {"error": exc.message}
        return r.aggregate.model_dump() | {"truncated": r.truncated, "n_tokens": r.n_tokens}

    for code, result in zip(todo, await asyncio.gather(*(one(c) for c in todo)), strict=True):
        scores[candidate_key(pp.problem.prompt, code)] = result
    return len(todo)


async def run(args: argparse.Namespace) -> Path:
    import torch

    from service.model import pick_dtype
    from service.serving.engine import ScoringEngine

    dtype = str(pick_dtype(args.dtype, torch.device("cpu"))).removeprefix("torch.")
    settings = Settings(checkpoint=args.checkpoint, cache_size=0, threads=args.threads, dtype=dtype, device="cpu")
    engine = await ScoringEngine.start(settings)
    revision = engine.model.revision
    path = cache_path(args.checkpoint, revision)
    data = read_cache(path)
    if data.get("dtype") != dtype:  # one precision per file: scores of another one are dropped, not mixed
        data = {"checkpoint": str(args.checkpoint.resolve().name), "revision": revision, "dtype": dtype,
                "default_aggregation": engine.model.manifest.default_aggregation, "scores": {}}
    scores: dict[str, Any] = data["scores"]
    pools = load_pools()
    try:
        for name in args.pools:
            started, done = time.perf_counter(), 0
            for i, pp in enumerate(pools[name]):
                done += await _score_problem(engine, pp, scores)
                data |= {"updated": now_iso(), "machine": machine_info()}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(data, indent=1) + "\n")
                print(f"{name} {i + 1}/{len(pools[name])}: {done} scored in {time.perf_counter() - started:.0f}s",
                      flush=True)
    finally:
        await engine.aclose()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--pools", nargs="+",
                        default=["apps_stdin_dev", "leetcode_dev_mutants", "apps_stdin_all", "mbpp_dev"])
    parser.add_argument("--threads", type=int, default=1, help="1 on a shared CPU: oversubscribed torch threads stall")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="auto: what the service picks here (fp32 on a CPU without native bf16)")
    print(f"wrote {asyncio.run(run(parser.parse_args()))}")


if __name__ == "__main__":
    main()
