"""Precision on this CPU: one SmolLM2-135M forward of 1,024 tokens in fp32 and in bf16 (median of 3, warm),
and what ``service.model.pick_dtype("auto")`` picks here. Output: ``results/dtype.json``.

    .venv/bin/python -m benchmarks.bench_dtype
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import RESULTS, machine_info, now_iso, write_json
from service.checkpoints.backbone import load_causal_lm, smollm2_gguf
from service.model import pick_dtype


def main() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 40000, (1, 1024))
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, _ = load_causal_lm(smollm2_gguf(), dtype=dtype)
        times = []
        with torch.inference_mode():
            model(input_ids=ids)  # warm-up
            for _ in range(3):
                started = time.perf_counter()
                model(input_ids=ids)
                times.append(time.perf_counter() - started)
        rows[str(dtype).removeprefix("torch.")] = {"seconds": times, "median_s": statistics.median(times)}
        print(f"{dtype}: {statistics.median(times):.2f} s per 1,024-token forward", flush=True)
    auto = str(pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    print(f"pick_dtype('auto') on this CPU: {auto}")
    write_json(RESULTS / "dtype.json", {"benchmark": "dtype", "date": now_iso(), "machine": machine_info(),
                                        "tokens": 1024, "threads": torch.get_num_threads(), "rows": rows,
                                        "auto": auto})


if __name__ == "__main__":
    main()
