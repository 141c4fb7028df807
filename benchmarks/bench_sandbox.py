"""B5: sandbox executions/s on this machine, for trivial and for typical programs.

* ``trivial``: ``print(1)`` on one stdin test, and ``x = 1`` with one ``assert``;
* ``typical``: LeetCode reference solutions with all their tests (one functional run each).

Each workload runs ``--runs`` executions through ``service.sandbox.run_many`` with 1 and with
``--workers`` workers (default: the CPU count), after a warm-up. Output: ``results/sandbox.json``.

    .venv/bin/python -m benchmarks.bench_sandbox
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, read_jsonl, table, write_json
from service.sandbox import SandboxJob, TestSpec, network_isolation, run_many


def jobs(kind: str, count: int) -> list[SandboxJob]:
    if kind == "trivial_stdin":
        return [SandboxJob("print(1)\n", [TestSpec(kind="io", input="", output="1\n")], "stdin")] * count
    if kind == "trivial_functional":
        return [SandboxJob("x = 1\n", [TestSpec(kind="assert", code="assert x == 1")], "functional")] * count
    out = []
    for row in read_jsonl(LEETCODE_TRAIN):
        tests = [TestSpec(kind="assert", code=t["code"]) for t in row.get("public_tests", []) + row.get(
            "private_tests", []) if t.get("code")]
        if row.get("canonical_solution") and tests:
            out.append(SandboxJob(row["canonical_solution"], tests, "functional", row.get("test_setup_code") or ""))
        if len(out) == count:
            return out
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "sandbox", "date": now_iso(), "machine": machine_info(),
                              "network_isolation": network_isolation(), "rows": []}
    rows = []
    for kind in ("trivial_stdin", "trivial_functional", "typical_leetcode"):
        batch = jobs(kind, args.runs)
        run_many(batch[:4], workers=args.workers)  # warm-up
        for workers in sorted({1, args.workers}):
            started = time.perf_counter()
            results = run_many(batch, workers=workers)
            seconds = time.perf_counter() - started
            passed = sum(r.passed for r in results)
            row = {"workload": kind, "workers": workers, "runs": len(batch), "passed": passed,
                   "seconds": seconds, "executions_per_s": len(batch) / seconds}
            report["rows"].append(row)
            rows.append([kind, str(workers), str(len(batch)), f"{passed}", f"{seconds:.1f}",
                         f"{row['executions_per_s']:.1f}"])
            print(f"  {kind} x{workers}: {row['executions_per_s']:.1f}/s", flush=True)
    print(table(["workload", "workers", "runs", "passed", "seconds", "exec/s"], rows))
    print(f"{report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; network isolation "
          f"{report['network_isolation']}")
    write_json(RESULTS / "sandbox.json", report)


if __name__ == "__main__":
    main()
