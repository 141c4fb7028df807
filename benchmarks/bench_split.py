"""Split throughput: ``service.steps.split_code`` in functions/s and programs/s.

Python: every canonical solution of ``shared/data/leetcodedataset_train.jsonl`` (the ``ast`` path).
JavaScript and Go: synthetic programs of five functions each (the tree-sitter path). Each set is
split ``--repeats`` times after a warm-up pass; the median and the min/max over the runs are
reported. "Functions" are the function and method steps a split finds (preamble and epilogue
steps are not counted). Results go to ``benchmarks/results/split.json``.

    .venv/bin/python -m benchmarks.bench_split [--repeats 11]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, read_jsonl, table, write_json
from service.errors import InvalidInput
from service.steps import split_code

FUNCTION_KINDS = frozenset({"function", "method"})
_VERBS = ["count", "merge", "build", "check", "find", "update", "reduce", "scan", "sort", "split"]
_NOUNS = ["Pairs", "Intervals", "Graph", "Window", "Prefix", "Heap", "Tree", "Grid", "Digits", "Path"]


def python_programs() -> list[str]:
    return [str(row["canonical_solution"]) for row in read_jsonl(LEETCODE_TRAIN)
            if str(row.get("canonical_solution") or "").strip()]


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = rng.choice(_VERBS) + rng.choice(_NOUNS) + str(rng.randrange(100))
        if name not in used:
            used.add(name)
            return name


def _js_body(rng: random.Random, indent: str) -> str:
    lines = [f"{indent}let acc = {rng.randrange(10)};"]
    for k in range(rng.randrange(2, 6)):
        lines += [f"{indent}for (let i{k} = 0; i{k} < xs.length; i{k}++) {{",
                  f"{indent}  if (xs[i{k}] % {rng.randrange(2, 9)} === 0) {{",
                  f"{indent}    acc = (acc * 31 + xs[i{k}]) % MOD; // fold element",
                  f"{indent}  }}",
                  f"{indent}}}"]
    lines.append(f"{indent}return acc;")
    return "\n".join(lines)


def js_program(rng: random.Random) -> str:
    """Five function steps: three declarations, one arrow function, one class method."""
    used: set[str] = set()
    names = [_name(rng, used) for _ in range(5)]
    parts = ['"use strict";\nconst MOD = 1_000_000_007;\n']
    for name in names[:3]:
        parts.append(f"/** {name}: fold the list. */\nfunction {name}(xs, k = 1) {{\n{_js_body(rng, '  ')}\n}}\n")
    parts.append(f"const {names[3]} = (xs) => {{\n{_js_body(rng, '  ')}\n}};\n")
    parts.append(f"class Solver {{\n  {names[4]}(xs) {{\n{_js_body(rng, '    ')}\n  }}\n}}\n")
    parts.append(f"module.exports = {{ {', '.join(names[:4])}, Solver }};\n")
    return "\n".join(parts)


def _go_body(rng: random.Random) -> str:
    lines = [f"\tacc := {rng.randrange(10)}"]
    for _ in range(rng.randrange(2, 6)):
        lines += ["\tfor i, x := range xs {",
                  f"\t\tif x%{rng.randrange(2, 9)} == 0 {{",
                  "\t\t\tacc = (acc*31 + x + i) % mod // fold element",
                  "\t\t}",
                  "\t}"]
    lines.append("\treturn acc")
    return "\n".join(lines)


def go_program(rng: random.Random) -> str:
    """Five function steps: three functions, one method, and ``main``."""
    used: set[str] = set()
    names = [_name(rng, used) for _ in range(4)]
    parts = ['package main\n\nimport "fmt"\n\nconst mod = 1_000_000_007\n\ntype solver struct{ k int }\n']
    for name in names[:3]:
        parts.append(f"// {name} folds the list.\nfunc {name}(xs []int) int {{\n{_go_body(rng)}\n}}\n")
    parts.append(f"func (s *solver) {names[3]}(xs []int) int {{\n{_go_body(rng)}\n}}\n")
    calls = ", ".join(f"{n}(xs)" for n in names[:3])
    parts.append(f"func main() {{\n\txs := []int{{1, 2, 3, 4, 5, 6}}\n\ts := &solver{{k: 2}}\n"
                 f"\tfmt.Println({calls}, s.{names[3]}(xs))\n}}\n")
    return "\n".join(parts)


def synthetic(language: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    make = js_program if language == "javascript" else go_program
    return [make(rng) for _ in range(n)]


def count_functions(programs: list[str], language: str) -> tuple[list[str], int, int, int]:
    """Programs that split, their function-step total, how many used the fallback, how many were refused."""
    kept: list[str] = []
    functions = fallback = refused = 0
    for code in programs:
        try:
            result = split_code(code, language)
        except InvalidInput:
            refused += 1
            continue
        kept.append(code)
        functions += sum(1 for s in result.steps if s.kind in FUNCTION_KINDS)
        fallback += not result.parsed
    return kept, functions, fallback, refused


def measure(programs: list[str], language: str, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for code in programs:
            split_code(code, language)
        seconds.append(time.perf_counter() - t0)
    return seconds


def bench_set(label: str, programs: list[str], language: str, repeats: int) -> dict[str, Any]:
    kept, functions, fallback, refused = count_functions(programs, language)  # also the warm-up pass
    seconds = measure(kept, language, repeats)
    fps = [functions / s for s in seconds]
    pps = [len(kept) / s for s in seconds]
    n_bytes = sum(len(c.encode()) for c in kept)
    return {
        "set": label, "language": language, "programs": len(kept), "functions": functions,
        "bytes": n_bytes, "fallback_splits": fallback, "refused": refused, "repeats": repeats,
        "seconds": seconds,
        "functions_per_s": {"median": statistics.median(fps), "min": min(fps), "max": max(fps)},
        "programs_per_s": {"median": statistics.median(pps), "min": min(pps), "max": max(pps)},
        "us_per_function_median": statistics.median(seconds) / functions * 1e6,
        "mb_per_s_median": n_bytes / statistics.median(seconds) / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="split_code throughput (functions/s, programs/s)")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per program set (default 11)")
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic programs per language (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "split.json")
    args = parser.parse_args(argv)

    machine = machine_info()
    sets = [("leetcode-train canonical", python_programs(), "python"),
            (f"synthetic {args.synthetic}x5 functions", synthetic("javascript", args.synthetic, args.seed),
             "javascript"),
            (f"synthetic {args.synthetic}x5 functions", synthetic("go", args.synthetic, args.seed), "go")]
    results = []
    for label, programs, language in sets:
        print(f"splitting {len(programs)} {language} programs ({label}) x{args.repeats} ...", flush=True)
        results.append(bench_set(label, programs, language, args.repeats))

    rows = []
    for r in results:
        f, p = r["functions_per_s"], r["programs_per_s"]
        rows.append([f"{r['language']} ({r['set']})", str(r["programs"]), str(r["functions"]),
                     f"{f['median']:,.0f}", f"{f['min']:,.0f}-{f['max']:,.0f}",
                     f"{p['median']:,.0f}", f"{p['min']:,.0f}-{p['max']:,.0f}",
                     f"{r['us_per_function_median']:.1f}", str(r["fallback_splits"])])
    print()
    print(table(["set", "programs", "functions", "func/s", "func/s min-max", "prog/s", "prog/s min-max",
                 "us/func", "fallback"], rows))
    print(f"\n{machine['cpu_model']}, {machine['cpu_count']} CPUs, load average {machine['loadavg_at_start']}")
    machine["loadavg_at_end"] = list(os.getloadavg())
    write_json(args.out, {"benchmark": "split", "date": now_iso(), "machine": machine,
                          "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
