"""Statement examples as a verifier (issue #15): extraction coverage, precision against reference solutions, and
the rerank gain of examples + PRM on real candidate pools.

```sh
nice -n 5 .venv/bin/python -m benchmarks.prm_pool_scores     # PRM scores, cached per checkpoint (slow, once)
nice -n 5 .venv/bin/python -m benchmarks.bench_examples      # -> results/examples.json and a table
```

- coverage: share of statements with >= 1 extracted example, per set; also over the statements that show an
  example at all (a line with "example", "sample", ">>>", "Input:" or an assert of the entry point);
- precision: every extracted example run on the reference solution (APPS stdin pool: the first candidate
  labelled correct), each example alone in the sandbox; every failing one is listed;
- rerank: selected pass@1 (expected over ties) of PRM only, examples only (random among the candidates with the
  best example result) and examples + PRM (the service's ranking rule, ``service.serving.rerank.rank_key``), against
  random and the oracle, with the share of the random -> oracle gap closed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info, now_iso, table, write_json
from benchmarks.example_pools import SETS, PoolProblem, candidate_key, load_pools, load_set
from benchmarks.prm_pool_scores import cache_path, read_cache, revision_of
from benchmarks.reference_pass_rate import reference_program
from service.sandbox import Limits, SandboxJob, TestSpec, run_many
from service.sandbox.examples import EXAMPLE_SETUP, Example, Extraction, extract_examples
from service.serving.rerank import rank_key
from service.settings import DEFAULT_CHECKPOINT
from trainer.records import Problem

LIMITS = Limits(wall_s=10.0, per_test_s=6.0)
POOL_NAMES = ("apps_stdin_all", "apps_stdin_dev", "mbpp_dev", "leetcode_dev_mutants")
SHOWS_EXAMPLE = re.compile(r"(?im)example|sample|>>>|^\s*input\s*:|^\s*assert\s")


def extract(problem: Problem) -> Extraction:
    return extract_examples(problem.prompt, starter_code=problem.starter_code, entry_point=problem.entry_point,
                            test_type=problem.test_type)


def spec(example: Example) -> TestSpec:
    return TestSpec(kind="assert", code=example.code) if example.code is not None \
        else TestSpec(kind="io", input=example.input, output=example.output)


def setup_for(problem: Problem) -> str:
    """What the service runs before a candidate on statement examples (it never sees a data set's setup)."""
    return EXAMPLE_SETUP if problem.test_type == "functional" else ""


def hidden_setup(problem: Problem) -> str:
    """The data set's own preamble, for its own (hidden) tests."""
    return problem.test_setup_code or ""


# --- coverage and precision --------------------------------------------------------------------


def coverage(name: str, problems: Sequence[Problem]) -> tuple[dict[str, Any], dict[str, Extraction]]:
    found: dict[str, Extraction] = {}
    seconds = []
    for p in problems:
        start = time.perf_counter()
        found[p.id] = extract(p)
        seconds.append(time.perf_counter() - start)
    shows = [p for p in problems if SHOWS_EXAMPLE.search(p.prompt)]
    covered = [p.id for p in problems if found[p.id].examples]
    return {"set": name, "statements": len(problems), "covered": len(covered),
            "coverage": len(covered) / max(1, len(problems)), "showing_example": len(shows),
            "covered_of_showing": sum(bool(found[p.id].examples) for p in shows),
            "coverage_of_showing": sum(bool(found[p.id].examples) for p in shows) / max(1, len(shows)),
            "examples": sum(len(e.examples) for e in found.values()),
            "skipped_blocks": sum(e.skipped for e in found.values()),
            "extract_ms_median": 1000 * statistics.median(seconds), "extract_ms_max": 1000 * max(seconds),
            "without_examples": [p.id for p in problems if not found[p.id].examples]}, found


def precision(name: str, refs: dict[str, tuple[Problem, str]], found: dict[str, Extraction],
              workers: int) -> dict[str, Any]:
    """Each (problem, example) run alone on the problem's reference program."""
    pairs = [(pid, ex) for pid in refs for ex in found[pid].examples]
    jobs = [SandboxJob(refs[pid][1], [spec(ex)], refs[pid][0].test_type, setup_for(refs[pid][0]), LIMITS)
            for pid, ex in pairs]
    results = run_many(jobs, workers=workers)
    failures = [{"id": pid, "form": ex.form, "text": ex.text, "test": ex.code or {"input": ex.input,
                                                                                  "output": ex.output},
                 "status": r.status, "failure": r.first_failure, "stderr_tail": r.stderr_tail[-300:]}
                for (pid, ex), r in zip(pairs, results, strict=True) if not r.passed]
    return {"set": name, "problems_with_reference": len(refs), "examples": len(pairs),
            "passed": len(pairs) - len(failures), "precision": 1 - len(failures) / max(1, len(pairs)),
            "failures": failures}


def set_references(problems: Sequence[Problem]) -> dict[str, tuple[Problem, str]]:
    return {p.id: (p, reference_program(p.model_dump())) for p in problems if p.canonical_solution}


def pool_references(pool: Sequence[PoolProblem]) -> dict[str, tuple[Problem, str]]:
    return {pp.problem.id: (pp.problem, next(c.code for c in pp.candidates if c.passed))
            for pp in pool if any(c.passed for c in pp.candidates)}


# --- rerank ------------------------------------------------------------------------------------


def label_mutants(pool: Sequence[PoolProblem], workers: int) -> list[list[bool]]:
    jobs = [SandboxJob(c.code, [TestSpec(kind=t.type, code=t.code, input=t.input, output=t.output)
                                for t in pp.problem.all_tests], pp.problem.test_type, hidden_setup(pp.problem), LIMITS)
            for pp in pool for c in pp.candidates]
    it = iter(r.passed for r in run_many(jobs, workers=workers))
    return [[next(it) for _ in pp.candidates] for pp in pool]


def _expected_top(keys: Sequence[tuple[Any, ...]], passed: Sequence[bool]) -> float:
    """Pass rate of a uniform pick among the candidates with the best (smallest) key."""
    best = min(keys)
    top = [p for k, p in zip(keys, passed, strict=True) if k == best]
    return sum(top) / len(top)


def rerank_pool(name: str, pool: Sequence[PoolProblem], labels: Sequence[Sequence[bool]], scores: dict[str, Any],
                aggregation: str, workers: int, statement: dict[str, str] | None = None) -> dict[str, Any]:
    """``statement``: problem id -> the text examples are extracted from (default: the pool's prompt)."""
    extractions = {pp.problem.id: extract(pp.problem.model_copy(update={"prompt": statement[pp.problem.id]})
                                          if statement else pp.problem) for pp in pool}
    jobs, where = [], []
    for k, pp in enumerate(pool):
        ex = extractions[pp.problem.id]
        if ex.examples:
            for j, c in enumerate(pp.candidates):
                jobs.append(SandboxJob(c.code, [spec(e) for e in ex.examples], ex.test_type, setup_for(pp.problem),
                                       LIMITS))
                where.append((k, j))
    start = time.perf_counter()
    results = dict(zip(where, run_many(jobs, workers=workers), strict=True))
    test_seconds = time.perf_counter() - start
    rows = []
    for k, pp in enumerate(pool):
        passed = list(labels[k])
        prm = []
        for c in pp.candidates:
            s = scores.get(candidate_key(pp.problem.prompt, c.code))
            prm.append(None if s is None else float("-inf") if "error" in s else float(s[aggregation]))
        scored = all(s is not None for s in prm)  # else (the cache is still being filled): no PRM columns
        outcome = [results.get((k, j)) for j in range(len(pp.candidates))]
        ex_keys = [rank_key(o.passed if o else None, o.n_passed if o else 0, o.n_tests if o else 0, 0.0)
                   for o in outcome]
        both = [rank_key(o.passed if o else None, o.n_passed if o else 0, o.n_tests if o else 0, s)
                for o, s in zip(outcome, prm, strict=True)]
        prm_only = [rank_key(None, 0, 0, s) for s in prm]
        rows.append({"id": pp.problem.id, "n": len(passed), "examples": len(extractions[pp.problem.id].examples),
                     "random": sum(passed) / len(passed), "oracle": float(any(passed)),
                     "prm": _expected_top(prm_only, passed) if scored else None,
                     "examples_only": _expected_top(ex_keys, passed),
                     "examples_prm": _expected_top(both, passed) if scored else None})
    return _summarize(name, rows, test_seconds, len(jobs))


def _summarize(name: str, rows: list[dict[str, Any]], test_seconds: float, runs: int) -> dict[str, Any]:
    def part(sel: list[dict[str, Any]]) -> dict[str, Any]:
        """Means over ``sel``; a method's columns only when every problem of ``sel`` has them."""
        if not sel:
            return {"problems": 0}
        methods = [k for k in ("prm", "examples_only", "examples_prm") if all(r[k] is not None for r in sel)]
        mean = {k: statistics.fmean(r[k] for r in sel) for k in ("random", "oracle", *methods)}
        gap = mean["oracle"] - mean["random"]
        return {"problems": len(sel), **mean, **{f"gap_closed_{k}": (mean[k] - mean["random"]) / gap if gap else None
                                                 for k in methods}}
    scored = [r for r in rows if r["prm"] is not None]
    return {"pool": name, "all": part(rows), "with_examples": part([r for r in rows if r["examples"]]),
            "prm_scored": part(scored) if len(scored) < len(rows) else None,
            "candidates": sum(r["n"] for r in rows), "sandbox_runs": runs, "test_seconds": round(test_seconds, 1),
            "per_problem": rows}


# --- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    revision = revision_of(args.checkpoint)
    cache = read_cache(cache_path(args.checkpoint, revision))
    pools = load_pools()
    out: dict[str, Any] = {"created": now_iso(), "machine": machine_info(), "checkpoint": args.checkpoint.name,
                           "revision": revision, "aggregation": cache.get("default_aggregation"),
                           "coverage": [], "precision": [], "rerank": []}
    for name in args.sets:
        problems = load_set(name)
        cov, found = coverage(name, problems)
        out["coverage"].append(cov)
        print(f"{name}: coverage {cov['covered']}/{cov['statements']}", flush=True)
        if not args.skip_precision and (refs := set_references(problems)):
            out["precision"].append(precision(name, refs, found, args.workers))
    apps = pools["apps_stdin_all"]
    cov, found = coverage("apps_stdin_pool", [pp.problem for pp in apps])
    out["coverage"].append(cov)
    if not args.skip_precision:
        out["precision"].append(precision("apps_stdin_pool (first correct candidate)", pool_references(apps), found,
                                          args.workers))
    if args.skip_rerank:
        return out
    if not cache:
        print(f"no PRM scores yet for {args.checkpoint} ({revision}): PRM columns left out "
              "(run benchmarks.prm_pool_scores)", flush=True)
    agg = args.aggregation or cache.get("default_aggregation", "min")
    out["aggregation"] = agg
    mbpp_orig = {p.id: p.prompt for p in load_set("mbpp")}
    for name in args.pools:
        pool = pools[name]
        labels = label_mutants(pool, args.workers) if name == "leetcode_dev_mutants" \
            else [[bool(c.passed) for c in pp.candidates] for pp in pool]
        scores = cache.get("scores", {})
        out["rerank"].append(rerank_pool(name, pool, labels, scores, agg, args.workers))
        if name == "mbpp_dev":  # the same candidates, examples from the original MBPP statement (its assert)
            out["rerank"].append(rerank_pool("mbpp_dev (original MBPP statement)", pool, labels, scores, agg,
                                             args.workers, {pp.problem.id: mbpp_orig[pp.problem.id] for pp in pool}))
        print(f"{name}: done", flush=True)
    return out


def print_tables(out: dict[str, Any]) -> None:
    print(table(["set", "statements", "covered", "of showing one", "examples", "skipped", "max ms"],
                [[c["set"], str(c["statements"]), f"{c['coverage']:.1%}",
                  f"{c['covered_of_showing']}/{c['showing_example']} ({c['coverage_of_showing']:.1%})",
                  str(c["examples"]), str(c["skipped_blocks"]), f"{c['extract_ms_max']:.1f}"]
                 for c in out["coverage"]]))
    if out["precision"]:
        print(table(["set", "examples", "reference passes", "failing"],
                    [[p["set"], str(p["examples"]), f"{p['precision']:.2%}", str(len(p["failures"]))]
                     for p in out["precision"]]))
    rows = []
    for r in out["rerank"]:
        for part in ("all", "with_examples", "prm_scored"):
            s = r[part]
            if s and s["problems"]:
                rows.append([f"{r['pool']} [{part}]", str(s["problems"]), f"{s['random']:.3f}", f"{s['oracle']:.3f}",
                             *(f"{s[k]:.3f} ({_pct(s['gap_closed_' + k])})" if k in s else "not scored"
                               for k in ("prm", "examples_only", "examples_prm"))])
    if rows:
        print(table(["pool", "problems", "random", "oracle", "PRM", "examples", "examples+PRM"], rows))


def markdown(out: dict[str, Any]) -> str:
    """The README tables (``--markdown``: from the last results file, nothing rerun)."""
    prec = {p["set"].split(" ")[0]: p for p in out["precision"]}
    lines = ["| set | statements | with ≥ 1 example | of those that show one | examples | reference passes |",
             "|---|---|---|---|---|---|"]
    for c in out["coverage"]:
        p = prec.get(c["set"])
        ref = f"{p['passed']}/{p['examples']} ({p['precision']:.2%})" if p else "no reference"
        lines.append(f"| {c['set']} | {c['statements']} | {c['covered']} ({c['coverage']:.1%}) | "
                     f"{c['covered_of_showing']}/{c['showing_example']} ({c['coverage_of_showing']:.1%}) | "
                     f"{c['examples']} | {ref} |")
    lines += ["", "| pool (problems) | random | oracle | PRM only | examples only | examples + PRM |",
              "|---|---|---|---|---|---|"]
    for r in out["rerank"]:
        for part in ("all", "with_examples", "prm_scored"):
            s = r.get(part)
            if not s or not s.get("problems") or (part == "with_examples" and s["problems"] == r["all"]["problems"]):
                continue
            cells = [f"{s[k]:.3f} ({_pct(s['gap_closed_' + k])})" if k in s else "not scored yet"
                     for k in ("prm", "examples_only", "examples_prm")]
            label = r["pool"] + {"all": "", "with_examples": ", those with examples",
                                 "prm_scored": ", PRM-scored part"}[part]
            lines.append(f"| {label} ({s['problems']}) | {s['random']:.3f} | {s['oracle']:.3f} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--aggregation", default=None, help="default: the checkpoint's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--skip-rerank", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the README tables of --out and exit")
    parser.add_argument("--pools", nargs="+", default=list(POOL_NAMES), choices=POOL_NAMES,
                        help="rerank only these pools (the others keep their last results)")
    parser.add_argument("--out", default=str(RESULTS / "examples.json"))
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    out = run(args)
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for part, skipped in (("precision", args.skip_precision), ("rerank", args.skip_rerank)):
        if skipped and previous.get(part):  # keep the last measured part (noted), e.g. while PRM scores fill in
            out[part], out[f"{part}_from"] = previous[part], previous.get(f"{part}_from", previous.get("created"))
    if not args.skip_rerank:  # pools not rerun keep their last measurement
        done = {r["pool"] for r in out["rerank"]}
        out["rerank"] += [r | {"measured": r.get("measured", previous.get("created"))}
                          for r in previous.get("rerank", []) if r["pool"] not in done]
    print_tables(out)
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
