"""Stage ``execute``: candidates run on their problem's tests in ``service.sandbox``."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.sandbox import Limits, TestSpec, run_tests
from trainer.config import ExecuteConfig
from trainer.manifest import progress, stage
from trainer.records import Candidate, ExecSummary, Problem
from trainer.rundir import ExecRecord, candidates_store, exec_store, run_problems


def problem_tests(problem: Problem) -> list[TestSpec]:
    """All the problem's tests, public and private (grading uses all of them)."""
    return [TestSpec(kind=t.type, code=t.code, input=t.input, output=t.output) for t in problem.all_tests]


def execute_candidate(problem: Problem, code: str, config: ExecuteConfig) -> ExecSummary:
    limits = Limits(wall_s=config.wall_s, memory_mb=config.memory_mb)
    result = run_tests(code, problem_tests(problem), test_type=problem.test_type,
                       setup_code=problem.test_setup_code or "", limits=limits,
                       stop_at_first_failure=config.stop_at_first_failure)
    return ExecSummary(passed=result.passed, n_tests=result.n_tests, n_passed=result.n_passed,
                       error_kind=result.status, seconds=result.seconds)


def pass_flags(problem: Problem, codes: Sequence[str], config: ExecuteConfig) -> list[bool]:
    """Whether each program passes all tests; ``config.workers`` sandboxes in parallel."""
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        return [s.passed for s in pool.map(lambda code: execute_candidate(problem, code, config), codes)]


def rollout_executor(config: ExecuteConfig, *, memo: int = 4096
                     ) -> Callable[[Problem, Sequence[str]], Awaitable[list[bool]]]:
    """The label stage's executor (``trainer.label.Executor``): one batch of rollouts in the sandbox at a time,
    ``config.workers`` processes each, off the event loop. The verdicts of the last ``memo`` distinct programs
    per problem are kept, so a program that comes back (the reference's continuation of a mutant's prefix before
    its mutation is the reference itself, for every mutant of the problem) runs once."""
    sandbox = asyncio.Semaphore(1)
    seen: OrderedDict[tuple[str, str], bool] = OrderedDict()

    async def execute(problem: Problem, codes: Sequence[str]) -> list[bool]:
        keys = [(problem.id, hashlib.sha256(code.encode()).hexdigest()) for code in codes]
        verdicts = {k: seen[k] for k in keys if k in seen}
        code_of = {k: code for k, code in zip(keys, codes, strict=True) if k not in verdicts}
        if code_of:
            async with sandbox:
                flags = await asyncio.to_thread(pass_flags, problem, list(code_of.values()), config)
            verdicts |= dict(zip(code_of, flags, strict=True))
        for key in keys:  # most recently used last; the oldest go first
            seen[key] = verdicts[key]
            seen.move_to_end(key)
        while len(seen) > memo:
            seen.popitem(last=False)
        return [verdicts[k] for k in keys]

    return execute


def run(rundir: Path, config: ExecuteConfig) -> int:
    """Run every candidate on all its problem's tests (public + private) in the sandbox."""
    problems = {p.id: p for p in run_problems(rundir)}
    store = exec_store(rundir)
    with stage(rundir / "execute", "execute", config, [candidates_store(rundir).path]) as st:
        done = store.keys()
        todo = [c for c in candidates_store(rundir).read() if (c.problem_id, c.candidate_id) not in done]

        def one(cand: Candidate) -> ExecRecord:
            summary = execute_candidate(problems[cand.problem_id], cand.code, config)
            if summary.error_kind == "sandbox_error":  # the machine's fault, not the candidate's: never recorded
                raise RuntimeError(f"the sandbox failed on {cand.problem_id}/{cand.candidate_id}; fix it and rerun "
                                   "(what was executed is kept)")
            return ExecRecord(problem_id=cand.problem_id, candidate_id=cand.candidate_id, exec=summary)

        with ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="execute") as pool:
            for record in progress(pool.map(one, todo), total=len(todo), desc="execute"):  # in order
                st.count("executed", store.append([record]))
        return st.manifest.counts.get("executed", 0)
