"""B5: sandbox executions/s on this machine, for trivial and for typical programs, against a naive baseline.

Workloads:
* ``trivial_stdin``: ``print(1)`` on one stdin test; ``trivial_functional``: ``x = 1`` with one ``assert``;
* ``typical_leetcode``: LeetCode reference solutions with all their tests (one functional run each).

Ways, interleaved (``--reps`` rounds; each round runs every way once, in order), medians reported:
* ``sandbox``: ``service.sandbox.run_many`` as this machine runs it (full isolation: fork server, own mount,
  PID and network namespaces with a private root, /tmp, /dev/shm and /proc; own uid, rlimits, result pipe);
* ``sandbox_no_mounts``: the same without the mount namespace (PID + network only, the isolation before
  issue 14), to show what the private filesystem costs;
* ``naive``: the baseline most harnesses start from, ``subprocess.run([python, "-c", program + tests])`` per
  run, with a timeout and no isolation at all (``typical`` only counts its exit status).
Each with 1 and with ``--workers`` workers (default: the CPU count), after a warm-up.

``labelling``: rollouts/s of the label stage's own machinery (``trainer.label.label_candidate`` with the
stage's executor, ``trainer.execute.rollout_executor``) on LeetCode references, with a policy that answers
instantly by replaying the reference's remaining steps, so that the number is the sandbox side of labelling;
the policy's generation time (a vLLM server in a real run) comes on top. Output: ``results/sandbox.json``.

    .venv/bin/python -m benchmarks.bench_sandbox
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, read_jsonl, table, write_json
from service import sandbox
from service.cof import assistant_prefix
from service.policy import Generation, GenerationRequest
from service.sandbox import SandboxJob, TestSpec, isolation, network_isolation, run_many
from trainer.config import ExecuteConfig
from trainer.execute import rollout_executor
from trainer.generate import make_candidate, problem_prompt
from trainer.label import label_candidate, prefix_code
from trainer.records import Candidate, ExecSummary, Problem, StepLabel

WORKLOADS = ("trivial_stdin", "trivial_functional", "typical_leetcode")


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


def naive_one(job: SandboxJob) -> bool:
    """The baseline: one plain interpreter per run, program and tests in one script, no isolation."""
    if job.test_type == "stdin":
        test = job.tests[0]
        proc = subprocess.run([sys.executable, "-c", job.code], input=(test.input or "").encode(),
                              capture_output=True, timeout=job.limits.per_test_s, check=False)
        return proc.returncode == 0 and proc.stdout.decode().strip() == (test.output or "").strip()
    script = "\n".join([job.setup_code, job.code, *(t.code or "" for t in job.tests)])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=job.limits.wall_s, check=False)
    return proc.returncode == 0


def naive_many(batch: Sequence[SandboxJob], workers: int) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(naive_one, batch))


def without_mounts(batch: Sequence[SandboxJob], workers: int) -> list[bool]:
    """``run_many`` with the mount namespace switched off (the probed host, minus CLONE_NEWNS)."""
    host = sandbox.sandbox_host()
    # probed as the service would probe such a host: the interpreter may differ (a pyenv build under a 0700
    # /root is reachable through the private root's binds only; without them the system python is used)
    plain = sandbox.detect_host(sandbox.isolation_modes(mounts=False)[:1])
    assert host is not None and plain is not None and plain.isolation == "namespaces"
    sandbox.host._host_cache[:] = [plain]
    try:
        return [r.passed for r in run_many(batch, workers=workers)]
    finally:
        sandbox.host._host_cache[:] = [host]


WAYS: dict[str, Callable[[Sequence[SandboxJob], int], list[bool]]] = {
    "sandbox": lambda batch, workers: [r.passed for r in run_many(batch, workers=workers)],
    "sandbox_no_mounts": without_mounts,
    "naive": naive_many,
}


def _prompt_key(messages: Sequence[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


class ReplayPolicy:
    """Answers each rollout request at once with the reference's remaining steps (see the module doc)."""

    name = "replay-reference"

    def __init__(self, pairs: Sequence[tuple[Problem, Candidate]]) -> None:
        # keyed by the problem's prompt too: many LeetCode references share their first step, "class Solution:"
        self._rest = {(_prompt_key(problem_prompt(p)[1]), assistant_prefix(prefix_code(c, k))):
                      "".join(s.text for s in c.steps[k + 1:]) + "\n```\n"
                      for p, c in pairs for k in range(len(c.steps))}

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        text = self._rest[_prompt_key(request.messages), request.prefix or ""]
        return [Generation(text, "stop", len(text) // 4)] * request.n

    async def aclose(self) -> None:
        return None


def labelling(problems: int, workers: int) -> dict[str, Any]:
    """Label the references of ``problems`` LeetCode problems with 2 rollouts per prefix."""
    done = ExecSummary(passed=True, n_tests=1, n_passed=1, error_kind="passed", seconds=0.0)  # references pass
    pairs: list[tuple[Problem, Candidate]] = []
    for row in read_jsonl(LEETCODE_TRAIN):
        if not row.get("canonical_solution"):
            continue
        problem = Problem.model_validate(row)
        candidate = make_candidate(problem, "ref", row["canonical_solution"], policy="reference", template="cof",
                                   provenance="reference")
        if len(candidate.steps) >= 2:
            pairs.append((problem, candidate.model_copy(update={"exec": done})))
        if len(pairs) == problems:
            break
    policy, execute = ReplayPolicy(pairs), rollout_executor(ExecuteConfig(workers=workers))

    async def run_all() -> list[list[StepLabel]]:
        return await asyncio.gather(*(label_candidate(policy, execute, p, c, rollouts=2, temperature=0.8, top_p=0.95,
                                                      max_tokens=384, seed=0) for p, c in pairs))

    started = time.perf_counter()
    labels = [label for per in asyncio.run(run_all()) for label in per]
    seconds = time.perf_counter() - started
    rollouts = sum(label.n_rollouts for label in labels if not label.final)
    passed = sum(label.n_pass for label in labels if not label.final)
    return {"problems": len(pairs), "workers": workers, "prefix_labels": sum(not lb.final for lb in labels),
            "rollouts": rollouts, "rollouts_passed": passed, "seconds": seconds, "rollouts_per_s": rollouts / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--label-problems", type=int, default=100)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--out", default="sandbox.json", help="file name under results/ (issue 14's loaded-machine "
                        "A/B: sandbox_isolation_ab.json)")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "sandbox", "date": now_iso(), "machine": machine_info(),
                              "network_isolation": network_isolation(), "isolation": isolation(), "baseline": "naive",
                              "args": vars(args), "rows": []}
    rows = []
    for kind in args.workloads:
        batch = jobs(kind, args.runs)
        for workers in sorted({1, args.workers}):
            seconds: dict[str, list[float]] = {way: [] for way in WAYS}
            passed: dict[str, int] = {}
            for fn in WAYS.values():
                fn(batch[:4], workers)  # warm-up (the sandbox starts its fork server)
            for _ in range(args.reps):
                for way, fn in WAYS.items():
                    started = time.perf_counter()
                    passed[way] = sum(fn(batch, workers))
                    seconds[way].append(time.perf_counter() - started)
            for way in WAYS:
                median = statistics.median(seconds[way])
                row = {"workload": kind, "way": way, "workers": workers, "runs": len(batch), "passed": passed[way],
                       "seconds": seconds[way], "executions_per_s": len(batch) / median,
                       "spread_per_s": [len(batch) / max(seconds[way]), len(batch) / min(seconds[way])]}
                report["rows"].append(row)
                rows.append([kind, way, str(workers), str(len(batch)), str(passed[way]), f"{median:.2f}",
                             f"{row['executions_per_s']:.1f}"])
                print(f"  {kind} {way} x{workers}: {row['executions_per_s']:.1f}/s", flush=True)
    print(table(["workload", "way", "workers", "runs", "passed", "median s", "exec/s"], rows))
    report["labelling"] = labelling(args.label_problems, args.workers)
    lab = report["labelling"]
    print(f"labelling: {lab['rollouts']} rollouts ({lab['rollouts_passed']} passed) from {lab['prefix_labels']} "
          f"prefixes of {lab['problems']} references in {lab['seconds']:.1f} s = {lab['rollouts_per_s']:.1f} "
          f"rollouts/s (policy time excluded)")
    print(f"{report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; isolation "
          f"{report['isolation']} (network {report['network_isolation']}); load average at start "
          f"{report['machine']['loadavg_at_start']}")
    write_json(RESULTS / args.out, report)


if __name__ == "__main__":
    main()
