"""B6: this CPU's matmul throughput (GFLOP/s, fp32 and bf16) and the scorer's achieved fraction.

The matmuls are square (``--size``, default 1024) and the shapes of SmolLM2-135M's layers at
one 400-token item (400 x 576 @ 576 x 1536). Attention (``torch.nn.functional.scaled_dot_product_attention``,
SmolLM2's 9 heads of 64) at the shape of a shared-prefix pass, 450 candidate tokens over 608 problem + 450 own
keys: with the bottom-right causal mask that pass needs, without a mask, and causal over 1,058 x 1,058;
GFLOP/s count 4 x queries x keys x 576, all the pairs the kernel visits. The scorer's FLOP/s are estimated
from a measured forward pass of a 400-token item: 2 x parameters x tokens (+ attention) over its time.

    .venv/bin/python -m benchmarks.bench_limit --checkpoint /tmp/smollm2-prm
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info, now_iso, summarize, table, write_json


def median_seconds(fn: Callable[[], Any], repeats: int, warm_up: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warm_up`` untimed ones."""
    for _ in range(warm_up):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return summarize(times)["median"]


def gflops(m: int, k: int, n: int, dtype: Any, repeats: int) -> dict[str, float]:
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    median = median_seconds(lambda: a @ b, repeats)
    return {"gflops": 2 * m * k * n / median / 1e9, "median_s": median}


def attention(queries: int, keys: int, mode: str, dtype: Any, repeats: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    heads, dim = 9, 64
    q = torch.randn(1, heads, queries, dim, dtype=dtype)
    k, v = torch.randn(1, heads, keys, dim, dtype=dtype), torch.randn(1, heads, keys, dim, dtype=dtype)
    mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries)[None, None] if mode == "masked" else None

    median = median_seconds(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                    is_causal=mode == "causal"), repeats)
    return {"ms": median * 1000, "gflops": 4 * queries * keys * heads * dim / median / 1e9}


def scorer(checkpoint: Path, dtype: str, tokens: int, repeats: int) -> dict[str, float]:
    from service.model import PRMModel

    model = PRMModel.load(checkpoint, device="cpu", dtype=dtype)  # type: ignore[arg-type]
    enc = model.encode("x " * (tokens - 40), ["def main():\n    return 1\n"])
    median = median_seconds(lambda: model.forward([enc]), repeats, warm_up=2)
    params = sum(p.numel() for n, p in model.network.named_parameters() if "embed_tokens" not in n)
    cfg = model.network.backbone.config
    attention = 4 * cfg.num_hidden_layers * enc.n_tokens**2 * cfg.hidden_size  # QK^T and AV, causal ~ /2 x 2
    flops = 2 * params * enc.n_tokens + attention
    return {"tokens": enc.n_tokens, "non_embedding_params": params, "gflop_per_pass": flops / 1e9,
            "median_s": median, "gflops": flops / median / 1e9}


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a PRM to measure against the limit")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = {"square": (args.size, args.size, args.size), "mlp_400tok": (400, 576, 1536)}
    matmul = {f"{name}/{dt}": gflops(*shape, getattr(torch, dt), args.repeats)
              for name, shape in shapes.items() for dt in ("float32", "bfloat16")}
    report: dict[str, Any] = {"benchmark": "limit", "date": now_iso(), "machine": machine_info(torch_info=True),
                              "threads": args.threads, "matmul": matmul}
    rows = [[k, f"{v['gflops']:,.1f}"] for k, v in matmul.items()]
    shapes_attn = {"masked": (450, 1058), "unmasked": (450, 1058), "causal": (1058, 1058)}
    report["attention"] = {f"{mode}_{q}x{kv}/{dt}": attention(q, kv, mode, getattr(torch, dt), args.repeats)
                           for mode, (q, kv) in shapes_attn.items() for dt in ("float32", "bfloat16")}
    rows += [[f"attention {k}", f"{v['gflops']:,.1f} ({v['ms']:.1f} ms)"] for k, v in report["attention"].items()]
    if args.checkpoint is not None:
        for dt in ("float32", "bfloat16"):
            s = scorer(args.checkpoint, dt, 400, max(5, args.repeats // 4))
            s["fraction_of_square_matmul"] = s["gflops"] / matmul[f"square/{dt}"]["gflops"]
            report[f"scorer/{dt}"] = s
            rows.append([f"scorer 400 tokens/{dt}", f"{s['gflops']:,.1f} ({s['fraction_of_square_matmul']:.0%} "
                         f"of square {dt} matmul)"])
    print(table(["what", "GFLOP/s"], rows))
    write_json(RESULTS / "limit.json", report)


if __name__ == "__main__":
    main()
