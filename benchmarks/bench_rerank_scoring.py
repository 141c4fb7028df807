"""B2: scoring the N candidates of one rerank, three ways side by side, same model and inputs.

* ``naive``: what a user would copy from the authors' evaluation code: one forward pass per step
  prefix, one candidate at a time (the score of step k is read at the end of prefix k), on the prefix's
  exact tokens (no shape-bucket padding: that is the service's, not the user's);
* ``one_pass``: every candidate in one padded batch, all its steps scored in one pass (separators),
  problem prefix NOT shared (``PRMModel.share_prefix = False``);
* ``shared``: the service's path: one pass per candidate, and the problem prefix run once for the
  whole group, its KV cache reused by every candidate.

Workload: one LeetCode training problem whose statement encodes closest to ``--problem-tokens``
(default 600), and N=16 CoF-shaped candidates of 3-6 functions each, assembled from real
reference-solution functions of other problems (their content does not matter for timing; their
shape does). Repetitions are interleaved; scores of the three ways are compared (max |Δp|).

    .venv/bin/python -m benchmarks.bench_rerank_scoring --checkpoint /tmp/smollm2-prm --dtype bfloat16
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, read_jsonl, summarize, table, write_json
from service.aggregate import sigmoid
from service.model import PRMModel
from service.steps import split_code

WAYS = ("naive", "one_pass", "shared")


def workload(model: PRMModel, n: int, problem_tokens: int, seed: int) -> tuple[str, list[list[str]]]:
    rows = list(read_jsonl(LEETCODE_TRAIN))
    problem = min(rows, key=lambda r: abs(len(model.tokenizer.encode(r["prompt"])) - problem_tokens))["prompt"]
    functions = [s.text.strip("\n") + "\n\n\n" for r in rows if r.get("canonical_solution")
                 for s in split_code(r["canonical_solution"]).steps if s.kind in ("function", "method")]
    functions = [f for f in functions if 40 <= len(f) <= 700]
    rng = random.Random(seed)
    cands: list[list[str]] = []
    for _ in range(100 * n):  # whole candidates only: every step must fit the checkpoint's max_tokens
        steps = rng.sample(functions, rng.randint(3, 6))
        if not model.encode(problem, steps).truncated:
            cands.append(steps)
        if len(cands) == n:
            return problem, cands
    raise SystemExit(f"cannot fit {n} candidates in {model.max_tokens} tokens: lower --problem-tokens")


def attention_share(fn: Callable[[], Any]) -> dict[str, float]:
    """One run of ``fn`` under the torch profiler: the share of CPU time in attention and in matmuls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    attention = sum(v for k, v in self_us.items() if "scaled_dot_product" in k)
    matmul = sum(v for k, v in self_us.items() if k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear"))
    return {"attention": attention / total, "matmul": matmul / total, "other": 1 - (attention + matmul) / total}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tests.tiny import save_tiny_prm

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_tiny_prm(Path(tmp) / "tiny-prm")
        model = PRMModel.load(checkpoint, device="cpu", dtype=args.dtype, threads=args.threads)
    problem, cands = workload(model, args.n, args.problem_tokens, args.seed)
    encoded = [model.encode(problem, steps) for steps in cands]
    prefixes = [[model.encode(problem, steps[: k + 1]) for k in range(len(steps))] for steps in cands]

    def naive() -> list[list[float]]:  # the user's loop calls the network on each prefix's exact tokens
        out: list[list[float]] = []
        for per_cand in prefixes:
            row = []
            for enc in per_cand:
                with torch.inference_mode():
                    logits = model.network(torch.tensor([enc.input_ids], device=model.device))  # (1, T)
                row.append(float(logits[0, enc.step_end_positions[-1]]))
            out.append(row)
        return out

    def batched(share: bool) -> Callable[[], list[list[float]]]:
        def go() -> list[list[float]]:
            model.share_prefix = share
            try:
                return model.forward(encoded)
            finally:
                model.share_prefix = True
        return go

    fns = {"naive": naive, "one_pass": batched(False), "shared": batched(True)}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    logits: dict[str, list[list[float]]] = {}
    for rep in range(args.repeats):
        for way in WAYS[rep % 3:] + WAYS[: rep % 3]:
            if way == "naive" and rep >= args.naive_repeats:
                continue
            started = time.perf_counter()
            logits[way] = fns[way]()
            times[way].append(time.perf_counter() - started)
        print(f"  round {rep + 1}/{args.repeats}: " + ", ".join(f"{w} {times[w][-1]:.2f}s" for w in WAYS
                                                                 if len(times[w]) > rep), flush=True)
    profile = attention_share(fns["shared"]) if args.profile else None
    base = [sigmoid(x) for row in logits["naive"] for x in row]
    diffs = {w: max(abs(sigmoid(x) - b) for x, b in zip([x for row in logits[w] for x in row], base, strict=True))
             for w in WAYS}
    tokens = {"naive": sum(e.n_tokens for per in prefixes for e in per), "one_pass": sum(e.n_tokens for e in encoded),
              "shared": encoded[0].prefix_len + sum(e.n_tokens - e.prefix_len for e in encoded)}
    return {"benchmark": "rerank_scoring", "date": now_iso(), "machine": machine_info(torch_info=True),
            "model": model.name, "dtype": args.dtype, "threads": args.threads, "n_candidates": len(cands),
            "steps_per_candidate": [len(c) for c in cands], "problem_tokens": encoded[0].prefix_len,
            "candidate_tokens": [e.n_tokens - e.prefix_len for e in encoded],
            "shared_profile": profile,
            "ways": {w: {"seconds": summarize(times[w]), "tokens_computed": tokens[w],
                         "max_abs_score_diff_vs_naive": diffs[w],
                         "speedup_vs_naive": summarize(times["naive"])["median"] / summarize(times[w])["median"]}
                     for w in WAYS}}


def print_table(report: dict[str, Any]) -> None:
    rows = [[w, f"{r['seconds']['median'] * 1000:,.0f}", f"{r['seconds']['min'] * 1000:,.0f}-"
             f"{r['seconds']['max'] * 1000:,.0f}", f"{r['tokens_computed']:,}", f"{r['speedup_vs_naive']:.1f}x",
             f"{r['max_abs_score_diff_vs_naive']:.1e}", str(r["seconds"]["n"])] for w, r in report["ways"].items()]
    print(table(["way", "median ms", "min-max ms", "tokens run", "vs naive", "max |dp|", "reps"], rows))
    print(f"{report['model']} {report['dtype']}, {report['threads']} threads; {report['n_candidates']} candidates of "
          f"{min(report['steps_per_candidate'])}-{max(report['steps_per_candidate'])} steps; problem "
          f"{report['problem_tokens']} tokens; {report['machine']['cpu_model']}")
    if share := report.get("shared_profile"):
        print(f"shared way, CPU time: attention {share['attention']:.0%}, matmuls {share['matmul']:.0%}, "
              f"other {share['other']:.0%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="PRM checkpoint (default: a tiny random one)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--problem-tokens", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also profile one shared run: attention's share")
    args = parser.parse_args(argv)
    report = run(args)
    print_table(report)
    name = "tiny" if args.checkpoint is None else args.checkpoint.name
    write_json(RESULTS / f"rerank_scoring_{name}_{args.dtype}.json", report)


if __name__ == "__main__":
    main()
