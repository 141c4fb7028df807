"""Memory and time that each new sequence length costs the scorer, with and without shape buckets.

oneDNN (torch's bf16 CPU matmuls) compiles kernels per matmul shape and keeps them, so every token count the
scorer has not seen before costs RSS that is never returned. The service pads widths to
multiples of ``service.model.SHAPE_BUCKET``; this measures both ways, each in a fresh process (the kernel
cache is process-wide): one item of each of ``--lengths`` distinct token counts (64, 65, ...), twice. Round 1
meets every shape for the first time, round 2 finds them all compiled (its time shows the padding's cost);
RSS is read after ``malloc_trim(0)``.

    .venv/bin/python -m benchmarks.bench_shapes                 # the default checkpoint, bf16
Output: ``results/shapes.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info, now_iso, table, write_json
from service.settings import DEFAULT_CHECKPOINT

WAYS = {"exact widths": 1, "buckets of 32": 32}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def worker(checkpoint: Path, dtype: str, bucket: int, lengths: int) -> dict[str, Any]:
    import service.model as model_module
    from service.encoding import Encoded

    model_module.SHAPE_BUCKET = bucket
    model = model_module.PRMModel.load(checkpoint, device="cpu", dtype=dtype)  # type: ignore[arg-type]
    trim = ctypes.CDLL(None).malloc_trim

    def item(n: int) -> Encoded:
        return Encoded(input_ids=[100 + i % 1000 for i in range(n)], step_end_positions=[n - 1], truncated=False,
                       n_steps=1)

    model.forward([item(32)])
    trim(0)
    start = rss_mb()
    rounds = []
    for _ in range(2):
        started = time.perf_counter()
        for n in range(64, 64 + lengths):
            model.forward([item(n)])
        seconds = time.perf_counter() - started
        trim(0)
        rounds.append({"seconds": seconds, "rss_growth_mb": rss_mb() - start})
    return {"bucket": bucket, "lengths": lengths, "rounds": rounds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--lengths", type=int, default=200)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: one way, in this process
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.checkpoint, args.dtype, args.worker, args.lengths)))
        return
    results = {}
    for name, bucket in WAYS.items():
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_shapes", "--worker", str(bucket),
                              "--checkpoint", str(args.checkpoint), "--dtype", args.dtype,
                              "--lengths", str(args.lengths)], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name}: {results[name]['rounds']}", flush=True)
    rows = []
    for name, r in results.items():
        first, second = r["rounds"]
        r["rss_mb_per_length"] = first["rss_growth_mb"] / args.lengths
        rows.append([name, f"{first['seconds']:.1f}", f"{second['seconds']:.1f}", f"{first['rss_growth_mb']:.0f}",
                     f"{second['rss_growth_mb']:.0f}", f"{r['rss_mb_per_length']:.2f}"])
    print(table(["widths", "round 1 s", "round 2 s", "RSS +MB round 1", "RSS +MB round 2", "MB per length"], rows))
    print(f"{args.lengths} distinct lengths (64..{63 + args.lengths} tokens), {args.checkpoint.name} {args.dtype}")
    write_json(RESULTS / "shapes.json", {"benchmark": "shapes", "date": now_iso(),
                                         "machine": machine_info(torch_info=True), "checkpoint": str(args.checkpoint),
                                         "dtype": args.dtype, "ways": results})


if __name__ == "__main__":
    main()
