"""B2's shared way against variants that might make it faster, side by side in one run.

The workload is B2's (``bench_rerank_scoring.workload``: 16 CoF-shaped candidates of 3-6 functions, a
~600-token problem). Every variant scores it with problem-prefix sharing; repetitions are interleaved
and each variant's scores are compared with the served way's (max |Δp|).

* ``served``: ``PRMModel.forward`` as the service runs it;
* ``gqa_in_kernel``: the masked (prefix-shared) passes call SDPA with ``enable_gqa`` instead of
  transformers' copy of every key/value head per query head;
* ``split_attention``: the prefix-shared passes attend to the problem (no mask, the query heads of one
  key/value head stacked) and to their own tokens (causal) separately, merged by log-sum-exp;
* ``two_per_pass``: candidates paired into passes (budget counted in own tokens, 2,048), so each
  matmul has ~2x the rows; the prefix cache is repeated for the pair;
* ``compiled``: the backbone under ``torch.compile(dynamic=True)`` (its compile time is reported apart).

Variants are benchmark-only monkeypatches; what the numbers justify moves into ``service/model.py``.

    .venv/bin/python -m benchmarks.bench_shared_ablation --checkpoint checkpoints/dreamprm-code-gemma3
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.bench_rerank_scoring import workload
from benchmarks.common import RESULTS, machine_info, now_iso, summarize, table, write_json
from service.aggregate import sigmoid
from service.model import PRMModel

VARIANTS = ("served", "gqa_in_kernel", "split_attention", "two_per_pass", "compiled")


def gqa_in_kernel(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                  scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def split_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                    scaling: float | None = None, is_causal: bool | None = None,
                    **kwargs: Any) -> tuple[Any, None]:
    """Prefix-shared passes of one row (queries = the row's own tokens, keys = prefix + own tokens):
    problem part unmasked, own part causal. Valid for right-padded rows only, as the service's are."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if attention_mask is None or b != 1 or kv_len <= q_len:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    p, groups = kv_len - q_len, heads // kv_heads
    grouped = query.reshape(1, kv_heads, groups * q_len, dim)  # heads of one kv head share its keys: stack them
    out_p, lse_p = flash(grouped, key[:, :, :p], value[:, :, :p], scale=scaling)
    out_p, lse_p = out_p.reshape(1, heads, q_len, dim), lse_p.reshape(1, heads, q_len)
    own_k, own_v = (t[:, :, p:].repeat_interleave(groups, dim=1) for t in (key, value))
    out_c, lse_c = flash(query, own_k, own_v, is_causal=True, scale=scaling)
    lse = torch.logaddexp(lse_p, lse_c)
    out = (out_p * torch.exp(lse_p - lse).unsqueeze(-1).to(out_p.dtype)
           + out_c * torch.exp(lse_c - lse).unsqueeze(-1).to(out_c.dtype))
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def attention(model: PRMModel, name: str, fn: Callable[..., Any]) -> Iterator[None]:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, sdpa_mask)
    backbone = model.network.backbone
    before = backbone.config._attn_implementation
    backbone.set_attn_implementation(name)
    try:
        yield
    finally:
        backbone.set_attn_implementation(before)


@contextlib.contextmanager
def own_token_passes(model: PRMModel, budget: int) -> Iterator[None]:
    def passes(batch: Any) -> list[list[int]]:
        order = sorted(range(len(batch)), key=lambda i: batch[i].n_tokens)
        out: list[list[int]] = []
        for i in order:
            own = batch[i].n_tokens - batch[i].prefix_len
            if out and (len(out[-1]) + 1) * own <= budget:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    model._passes = passes  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model._passes


@contextlib.contextmanager
def swapped_forward(model: PRMModel, forward: Callable[..., Any]) -> Iterator[None]:
    backbone = model.network.backbone
    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model = PRMModel.load(args.checkpoint, device="cpu", dtype=args.dtype, threads=args.threads)
    problem, cands = workload(model, args.n, args.problem_tokens, args.seed)
    encoded = [model.encode(problem, steps) for steps in cands]
    compiled = torch.compile(model.network.backbone.forward, dynamic=True)
    contexts: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
        "served": contextlib.nullcontext,
        "gqa_in_kernel": lambda: attention(model, "bench_gqa_in_kernel", gqa_in_kernel),
        "split_attention": lambda: attention(model, "bench_split_attention", split_attention),
        "two_per_pass": lambda: own_token_passes(model, 2048),
        "compiled": lambda: swapped_forward(model, compiled),
    }
    warm_up: dict[str, float] = {}
    for name in VARIANTS:
        with contexts[name]():
            started = time.perf_counter()
            model.forward(encoded)
            warm_up[name] = time.perf_counter() - started
        print(f"  warm-up {name}: {warm_up[name]:.1f} s", flush=True)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    logits: dict[str, list[list[float]]] = {}
    for rep in range(args.repeats):
        for name in VARIANTS[rep % len(VARIANTS):] + VARIANTS[: rep % len(VARIANTS)]:
            with contexts[name]():
                started = time.perf_counter()
                logits[name] = model.forward(encoded)
                times[name].append(time.perf_counter() - started)
        print(f"  round {rep + 1}/{args.repeats}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in VARIANTS),
              flush=True)
    base = [sigmoid(x) for row in logits["served"] for x in row]
    served = summarize(times["served"])["median"]
    return {"benchmark": "shared_ablation", "date": now_iso(), "machine": machine_info(torch_info=True),
            "model": model.name, "dtype": args.dtype, "threads": args.threads, "n_candidates": len(cands),
            "problem_tokens": encoded[0].prefix_len,
            "candidate_tokens": [e.n_tokens - e.prefix_len for e in encoded],
            "compile_seconds": warm_up["compiled"],
            "variants": {v: {"seconds": summarize(times[v]),
                             "vs_served": served / summarize(times[v])["median"],
                             "max_abs_score_diff_vs_served": max(
                                 abs(sigmoid(x) - b) for x, b in zip([x for r in logits[v] for x in r], base,
                                                                     strict=True))}
                         for v in VARIANTS}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--problem-tokens", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args)
    print(table(["variant", "median s", "min-max s", "vs served", "max |dp| vs served"],
                [[v, f"{r['seconds']['median']:.2f}", f"{r['seconds']['min']:.2f}-{r['seconds']['max']:.2f}",
                  f"{r['vs_served']:.3f}x", f"{r['max_abs_score_diff_vs_served']:.1e}"]
                 for v, r in report["variants"].items()]))
    print(f"{report['model']} {report['dtype']}, {report['threads']} threads, torch.compile took "
          f"{report['compile_seconds']:.0f} s; {report['n_candidates']} candidates, problem "
          f"{report['problem_tokens']} tokens; {report['machine']['cpu_model']}")
    write_json(RESULTS / f"shared_ablation_{args.dtype}.json", report)


if __name__ == "__main__":
    main()
