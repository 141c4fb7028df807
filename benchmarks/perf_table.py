"""The README's performance table, generated from ``benchmarks/results/*.json`` (issue #6's targets).

    .venv/bin/python -m benchmarks.perf_table            # print the table
    .venv/bin/python -m benchmarks.perf_table --write    # replace it in README.md (between the markers)

``tests/test_readme.py`` fails when the README's table differs from what this prints.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
Row = tuple[str, str, str, str]  # benchmark, target, measured, reached


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def b1() -> Row | None:
    r = _load("score_smollm2_bfloat16_batch8.json")
    if r is None:
        return None
    by = {(x["level"], x["workload"]): x for x in r["results"]}
    http, fwd = by[("http", "batch8")], by[("forward", "batch8")]
    ratio = http["tokens_per_s"] / fwd["tokens_per_s"]
    return ("B1 `/v1/score` vs backbone forward, 8 items (SmolLM2 PRM, bf16)", "HTTP tok/s ≥ 0.85 × forward",
            f"{http['tokens_per_s']:,.0f} vs {fwd['tokens_per_s']:,.0f} tok/s = {ratio:.2f}×", _yes(ratio >= 0.85))


def b2() -> list[Row]:
    rows = []
    for dtype in ("bfloat16", "float32"):
        # the default checkpoint; before it existed, an untrained SmolLM2 PRM of the same shape
        r = _load(f"rerank_scoring_dreamprm-code-smollm2_{dtype}.json") or \
            _load(f"rerank_scoring_smollm2-prm_{dtype}.json")
        if r is None:
            continue
        shared = r["ways"]["shared"]
        diff = shared["max_abs_score_diff_vs_naive"]
        rows.append((f"B2 scoring {r['n_candidates']} CoF candidates vs the naive per-prefix loop ({r['dtype']})",
                     "≥ 8× faster, scores within 1e-3",
                     f"{shared['speedup_vs_naive']:.1f}× ({r['ways']['naive']['seconds']['median']:.1f} → "
                     f"{shared['seconds']['median']:.1f} s), max abs. Δp {diff:.1e}",
                     _yes(shared["speedup_vs_naive"] >= 8 and diff <= 1e-3)))
    return rows


def b3() -> Row | None:
    r = _load("concurrency_default.json")
    if r is None:
        return None
    t = r["targets"]
    last = r["levels"][-1]
    ok = t["errors"] == 0 and t["p99_over_p50"] <= t["p99_over_p50_max"] and abs(t["rss_slope_mb_per_min"]) < 1.0
    return (f"B3 {t['clients']} concurrent clients, {t['minutes']:.0f} min (default checkpoint, cache off)",
            "0 errors, p99 ≤ 4 × p50, memory flat",
            f"{t['errors']} errors, p50 {last['latency_ms']['p50'] / 1000:.1f} s, p99 "
            f"{last['latency_ms']['p99'] / 1000:.1f} s ({t['p99_over_p50']:.2f}×), RSS "
            f"{last['rss_mb']['start']:.0f}→{last['rss_mb']['end']:.0f} MB ({t['rss_slope_mb_per_min']:+.1f} MB/min), "
            f"{last['tokens_per_s']:,.0f} tok/s", _yes(ok))


def b4() -> Row | None:
    r = _load("cache.json")
    if r is None:
        return None
    rows = r["rows"]
    mem, redis = rows["hit, memory LRU"]["median"], rows["hit, Redis"]["median"]
    return ("B4 cache hit over HTTP", "p50 ≤ 2 ms",
            f"{mem:.2f} ms (memory), {redis:.2f} ms (Redis); miss {rows['miss (cache off)']['median']:.0f} ms",
            _yes(max(mem, redis) <= 2.0))


def b5() -> Row | None:
    r = _load("sandbox.json")
    if r is None:
        return None
    best: dict[tuple[str, str], float] = {}
    for row in r["rows"]:
        key = (row.get("way", "sandbox"), row["workload"])
        best[key] = max(best.get(key, 0.0), row["executions_per_s"])

    def rate(way: str, trivial: bool) -> float:  # the slower trivial workload (stdin or functional)
        return min((v for (w, k), v in best.items() if w == way and k.startswith("trivial") == trivial), default=0.0)

    stdin, functional = best.get(("sandbox", "trivial_stdin"), 0.0), best.get(("sandbox", "trivial_functional"), 0.0)
    measured = (f"full isolation {stdin:.0f} trivial stdin / {functional:.0f} trivial functional runs/s, "
                f"{rate('sandbox', False):.0f} typical (LeetCode reference + tests)/s")
    if rate("sandbox_no_mounts", True):
        measured += (f"; without the private filesystem {rate('sandbox_no_mounts', True):.0f} / "
                     f"{rate('sandbox_no_mounts', False):.0f}")
    if rate("naive", True):
        measured += f"; naive `subprocess.run`, no isolation: {rate('naive', True):.0f} / {rate('naive', False):.0f}"
    if lab := r.get("labelling"):
        measured += f"; labelling {lab['rollouts_per_s']:.0f} rollouts/s (policy time excluded)"
    return ("B5 sandbox executions/s, 2 cores, full isolation (issue 14)", "≥ 150 trivial/s", measured,
            _yes(rate("sandbox", True) >= 150))


def b6() -> Row | None:
    r = _load("limit.json")
    if r is None:
        return None
    m, s = r["matmul"], r
    return ("B6 the limit: matmul peak vs the scorer (one 400-token item)", "—",
            f"peak {m['square/bfloat16']['gflops']:.0f} GFLOP/s bf16, {m['square/float32']['gflops']:.0f} fp32; "
            f"scorer {s['scorer/bfloat16']['fraction_of_square_matmul']:.0%} (bf16), "
            f"{s['scorer/float32']['fraction_of_square_matmul']:.0%} (fp32) of it", "—")


def b8() -> Row | None:
    r = _load("engine_float32.json")
    if r is None:
        return None
    res, ratios = r["results"], r["ratios"]["batch"]

    def tps(name: str) -> str:
        return f"{res[name]['tokens_per_s']:,.0f}"
    measured = (f"{r['items']} LeetCode items, {r['dtype']}, one batch request, items' tok/s: ours on vLLM "
                f"{tps('ours/vllm/batch')} = {ratios['ours_vllm_over_vllm_step']:.2f}× vLLM STEP pooling "
                f"({tps('vllm/step/batch')}) and {ratios['ours_vllm_over_ours_torch']:.2f}× ours on torch "
                f"({tps('ours/torch/batch')}; torch engine = {ratios['ours_torch_over_vllm_step']:.2f}× vLLM); "
                f"vLLM per-prefix + prefix cache {tps('vllm/prefix/batch')}")
    ok = ratios["ours_vllm_over_vllm_step"] >= 0.9 and ratios["ours_vllm_over_ours_torch"] >= 1.4
    return ("B8 `/v1/score` on the vLLM engine (issue 18)", "≥ 0.9× vLLM STEP pooling and ≥ 1.4× the torch engine",
            measured, _yes(ok))


BENCHMARKS: tuple[Callable[[], Row | list[Row] | None], ...] = (b1, b2, b3, b4, b5, b6, b8)


def render() -> str:
    rows: list[Row] = []
    for fn in BENCHMARKS:
        found = fn()
        rows += found if isinstance(found, list) else [found] if found is not None else []
    lines = ["| benchmark | target | measured | reached |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README lacks the {START} ... {END} markers")
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args(argv)
    block = render()
    if args.write:
        readme = Path(REPO / "README.md")
        readme.write_text(replace_block(readme.read_text(), block))
    print(block)


if __name__ == "__main__":
    main()
