"""Forward-pass size on CPU: the 16 candidates of one rerank scored with different per-pass token
budgets (``PRMModel.pass_tokens``), problem-prefix sharing off and on. This is the measurement
behind ``service.model.CPU_PASS_TOKENS``.

    .venv/bin/python -m benchmarks.bench_pass_size --checkpoint /tmp/smollm2-prm --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_rerank_scoring import workload
from benchmarks.common import RESULTS, machine_info, now_iso, summarize, table, write_json
from service.model import PRMModel

BUDGETS: tuple[int | None, ...] = (None, 4096, 2048, 1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    model = PRMModel.load(args.checkpoint, device="cpu", dtype=args.dtype, threads=args.threads)
    problem, cands = workload(model, 16, 600, 0)
    encoded = [model.encode(problem, c) for c in cands]
    model.forward(encoded[:2])  # warm-up
    rows: list[dict[str, Any]] = []
    for share in (False, True):
        for budget in BUDGETS:
            model.share_prefix, model.pass_tokens = share, budget
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                model.forward(encoded)
                times.append(time.perf_counter() - started)
            rows.append({"share_prefix": share, "pass_tokens": budget, "seconds": summarize(times),
                         "passes": len(model._passes(encoded))})
            print(f"  share={share} pass_tokens={budget}: {rows[-1]['seconds']['median']:.1f} s", flush=True)
    print(table(["share prefix", "pass tokens", "passes", "median s", "min-max s"],
                [[str(r["share_prefix"]), str(r["pass_tokens"] or "all"), str(r["passes"]),
                  f"{r['seconds']['median']:.1f}", f"{r['seconds']['min']:.1f}-{r['seconds']['max']:.1f}"]
                 for r in rows]))
    print(f"16 candidates, {sum(e.n_tokens for e in encoded):,} tokens, {min(e.n_tokens for e in encoded)}-"
          f"{max(e.n_tokens for e in encoded)} each; {model.name} {args.dtype}, {args.threads} threads")
    write_json(RESULTS / "pass_size.json", {"benchmark": "pass_size", "date": now_iso(),
                                            "machine": machine_info(torch_info=True), "model": model.name,
                                            "dtype": args.dtype, "tokens": [e.n_tokens for e in encoded],
                                            "rows": rows})


if __name__ == "__main__":
    main()
