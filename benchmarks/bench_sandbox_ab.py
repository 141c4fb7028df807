"""The sandbox runner of a git revision against the working tree's, interleaved in one process: trivial
executions/s with full isolation, ``--workers`` at a time (the caller side, ``service.sandbox``, is the working
tree's for both; only the fork server's source differs). Output: ``results/sandbox_runner_ab.json``.

    .venv/bin/python -m benchmarks.bench_sandbox_ab --base 3948fc3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_sandbox import jobs
from benchmarks.common import REPO, RESULTS, machine_info, now_iso, write_json
from service import sandbox
from service.sandbox import process, run_many
from service.sandbox import runner as sandbox_runner


def _use(runner: str) -> None:
    """Fork servers from now on run ``runner`` (the old ones are stopped)."""
    for servers in process._zygotes.values():
        for server in servers:
            if server.process is not None:
                server.process.kill()
                server.process.wait()
    process._zygotes.clear()
    sandbox_runner.__file__ = runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision whose service/sandbox/runner.py is compared")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=REPO, check=True, capture_output=True,
                               text=True).stdout.strip()  # "HEAD" would mean nothing once committed
    for path in ("service/sandbox/runner.py", "service/sandbox_runner.py"):  # its place before the rooms
        shown = subprocess.run(["git", "show", f"{args.base}:{path}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    shown.check_returncode()
    old = shown.stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(old)
    ways = {args.base: fh.name, "working tree": sandbox_runner.__file__}
    report = {"benchmark": "sandbox_runner_ab", "date": now_iso(), "machine": machine_info(), "args": vars(args),
              "isolation": sandbox.isolation(), "rows": []}
    try:
        for kind in ("trivial_stdin", "trivial_functional"):
            batch = jobs(kind, args.runs)
            rates: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(args.reps):
                for way, runner in ways.items():
                    _use(runner)
                    run_many(batch[:8], workers=args.workers)  # warm-up: starts the fork servers
                    started = time.perf_counter()
                    passed = sum(r.passed for r in run_many(batch, workers=args.workers))
                    assert passed == len(batch), f"{way}: {passed}/{len(batch)} passed"
                    rates[way].append(len(batch) / (time.perf_counter() - started))
            for way, values in rates.items():
                report["rows"].append({"workload": kind, "runner": way, "executions_per_s": statistics.median(values),
                                       "reps": values})
                print(f"{kind:20s} {way:14s} {statistics.median(values):6.1f}/s  {[round(v) for v in values]}",
                      flush=True)
    finally:
        _use(ways["working tree"])
        Path(fh.name).unlink()
    write_json(RESULTS / "sandbox_runner_ab.json", report)


if __name__ == "__main__":
    main()
