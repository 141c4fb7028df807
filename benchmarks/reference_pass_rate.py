"""Reference solutions of ../shared/data through ``service.sandbox``: pass rate, executions/s, status counts.

    python benchmarks/reference_pass_rate.py [--files leetcodedataset_train humaneval ...] [--limit N] [--workers 2]

Every problem with a ``canonical_solution`` runs on all its tests (public + private); writes
``benchmarks/results/reference_pass_rate.json``. A reference that fails points at the harness or the data.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, RESULTS, machine_info, now_iso, read_jsonl, table, write_json
from service.sandbox import Limits, SandboxJob, TestSpec, run_many, sandbox_host

DEFAULT_FILES = ("leetcodedataset_train", "humaneval", "humanevalplus", "mbpp", "mbpp_sanitized", "mbppplus",
                 "leetcodedataset_test_shared")


def reference_program(problem: dict[str, Any]) -> str:
    """HumanEval's original ``canonical_solution`` is only a body; the shared files already hold prompt + body."""
    solution, prompt = str(problem["canonical_solution"]), str(problem["prompt"])
    if problem["source"] in ("humaneval", "humanevalplus") and not solution.startswith(prompt):
        return prompt + solution
    return solution


def reference_job(problem: dict[str, Any], limits: Limits) -> SandboxJob:
    tests = [TestSpec(kind=t["type"], code=t.get("code"), input=t.get("input"), output=t.get("output"))
             for t in problem["public_tests"] + problem["private_tests"]]
    return SandboxJob(reference_program(problem), tests, problem["test_type"], problem.get("test_setup_code") or "",
                      limits)


def run_file(path: Path, limit: int | None, workers: int, limits: Limits) -> dict[str, Any]:
    problems = [p for p in read_jsonl(path) if p.get("canonical_solution")][:limit]
    jobs = [reference_job(p, limits) for p in problems]
    start = time.perf_counter()
    results = run_many(jobs, workers=workers)
    seconds = time.perf_counter() - start
    passed = sum(r.passed for r in results)
    runs = sum(1 if j.test_type == "functional" else max(1, len(j.tests)) for j in jobs)
    failures = {p["id"]: {"status": r.status, "first_failure": r.first_failure, "n_passed": r.n_passed,
                          "n_tests": r.n_tests, "stderr_tail": r.stderr_tail[-400:]}
                for p, r in zip(problems, results, strict=True) if not r.passed}
    return {"problems": len(problems), "passed": passed, "pass_rate": passed / max(1, len(problems)),
            "tests": sum(r.n_tests for r in results), "tests_passed": sum(r.n_passed for r in results),
            "seconds": round(seconds, 2), "executions": runs, "executions_per_s": round(runs / seconds, 2),
            "statuses": dict(Counter(r.status for r in results)), "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="names in ../shared/data")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wall-s", type=float, default=30.0, help="wall limit of one run (HumanEval+/MBPP+ "
                        "suites run up to ~1000 inputs in one run)")
    parser.add_argument("--memory-mb", type=int, default=Limits().memory_mb, help="address-space limit; "
                        "evalplus allows 4096 (MbppPlus/255 needs more than 1024)")
    parser.add_argument("--out", type=Path, default=RESULTS / "reference_pass_rate.json")
    args = parser.parse_args()
    limits = Limits(wall_s=args.wall_s, memory_mb=args.memory_mb)
    host = sandbox_host()
    per_file = {}
    for name in args.files:
        per_file[name] = run_file(DATA / f"{name.removesuffix('.jsonl')}.jsonl", args.limit, args.workers, limits)
        r = per_file[name]
        print(f"{name}: {r['passed']}/{r['problems']} passed, {r['executions_per_s']} executions/s, {r['statuses']}")
    rows = [[name, f"{r['passed']}/{r['problems']}", f"{100 * r['pass_rate']:.1f}%",
             f"{r['tests_passed']}/{r['tests']}", f"{r['executions_per_s']:.1f}", f"{r['seconds']:.0f}",
             " ".join(f"{k}={v}" for k, v in sorted(r["statuses"].items()))] for name, r in per_file.items()]
    print(table(["file", "passed", "rate", "tests", "exec/s", "s", "statuses"], rows))
    write_json(args.out, {"created": now_iso(), "machine": machine_info(), "workers": args.workers,
                          "limits": {"wall_s": limits.wall_s, "memory_mb": limits.memory_mb},
                          "sandbox": None if host is None else {"python": host.python, "network": host.network,
                                                                "own_uid_per_run": host.drop_to_uid},
                          "files": per_file})


if __name__ == "__main__":
    main()
