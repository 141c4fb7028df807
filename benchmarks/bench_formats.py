"""Checkpoint formats on a real backbone (the default checkpoint, SmolLM2-135M + our LoRA and head).

1. Export round trip: ``export --format hf`` of the default checkpoint, served back through the format loader:
   the largest |P(step) difference| from the original over real candidates.
2. The authors' convention (one sequence per code prefix, read at its last token), on the same network: the
   prefixes of N candidates of one problem scored (a) in one batch on the problem's shared KV cache (what the
   service does), (b) in one padded batch without sharing, (c) one sequence at a time (their evaluation loop).

    .venv/bin/python -m benchmarks.bench_formats [--candidates 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, RESULTS, machine_info, now_iso, read_jsonl, write_json
from service.settings import DEFAULT_CHECKPOINT

POOL = DATA / "candidates" / "apps_stdin_pool.jsonl"


def candidates(n: int) -> tuple[str, list[list[str]]]:
    """The first APPS problem with ``n`` candidates that split into 2+ steps: (problem, step texts each)."""
    from service.steps import split_code

    for row in read_jsonl(POOL):
        cands = [[s.text for s in split_code(c["code"], "python").steps] for c in row["candidates"]]
        cands = [c for c in cands if len(c) >= 2][:n]
        if len(cands) == n:
            return row["prompt"], cands
    raise SystemExit(f"no problem with {n} multi-step candidates in {POOL}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def round_trip(ours: Any, problem: str, cands: list[list[str]]) -> dict[str, Any]:
    from service.checkpoints.hf_export import export_hf
    from service.checkpoints.load import load_scorer

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        export_hf(ours, Path(tmp) / "hf")
        export_s = time.perf_counter() - started
        log(f"exported in {export_s:.1f} s; loading it back")
        back = load_scorer(Path(tmp) / "hf", device="cpu", dtype="float32")
        items = [ours.encode(problem, c) for c in cands]
        a = ours.forward(items)
        log("scored with the original")
        b = back.forward([back.encode(problem, c) for c in cands])
        log("scored with the export")
    import math

    def p(x: float) -> float:
        return 1 / (1 + math.exp(-x))
    diffs = [abs(p(x) - p(y)) for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True)]
    return {"format": back.format, "template": back.template, "steps": len(diffs), "max_abs_dp": max(diffs),
            "export_s": round(export_s, 2)}


def authors_ways(base: Any, problem: str, cands: list[list[str]]) -> dict[str, Any]:
    from service.checkpoints import templates as tpl
    from service.checkpoints.scorers import RowsPRM

    tok = base.tokenizer

    def encoder(prob: str, steps: Any, limit: int) -> Any:
        return tpl.encode_rows(tok, lambda q: tpl.authors_texts(q, steps), lambda q: tpl.AUTHORS_TEMPLATE.format(
            platform="", question_id="", title="", content=q, starter="").split("<starter_code>")[0], prob,
            len(steps), limit)
    model = RowsPRM(base.network, tok, base.manifest, fmt="dreamprm-code-authors", template=tpl.AUTHORS_TEMPLATE_ID,
                    encoder=encoder, revision="bench", pad_id=base.pad_id)
    model.pass_tokens = None  # one pass per way: the comparison is sharing, not pass sizes
    items = [model.encode(problem, c) for c in cands]
    rows = [r for it in items for r in it.rows]  # type: ignore[attr-defined]
    model.forward(items[:1])  # warm kernels
    out: dict[str, Any] = {"rows": len(rows), "row_tokens": sum(r.n_tokens for r in rows),
                           "shared_prefix_tokens": rows[0].prefix_len}
    results = {}
    for way in ("shared", "padded", "one_at_a_time"):
        model.share_prefix = way == "shared"
        started = time.perf_counter()
        if way == "one_at_a_time":
            got = [x for r in rows for x in super(RowsPRM, model).forward([r])[0]]
        else:
            got = [x for xs in model.forward(items) for x in xs]
        out[f"{way}_s"] = round(time.perf_counter() - started, 2)
        log(f"authors' prefixes, {way}: {out[f'{way}_s']} s")
        results[way] = got
    out["max_abs_logit_diff"] = max(abs(x - y) for way in ("padded", "one_at_a_time")
                                    for x, y in zip(results["shared"], results[way], strict=True))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from service.model import PRMModel

    problem, cands = candidates(args.candidates)
    ours = PRMModel.load(DEFAULT_CHECKPOINT, device="cpu", dtype="float32")
    log("loaded the default checkpoint")
    report = {"benchmark": "formats", "date": now_iso(), "machine": machine_info(torch_info=True),
              "checkpoint": DEFAULT_CHECKPOINT.name, "dtype": "float32", "n_candidates": len(cands),
              "export_round_trip": round_trip(ours, problem, cands),
              "authors_prefixes": authors_ways(ours, problem, cands)}
    print(report["export_round_trip"])
    print(report["authors_prefixes"])
    write_json(RESULTS / "formats.json", report)


if __name__ == "__main__":
    main()
