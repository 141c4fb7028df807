"""Stage ``execute``: candidates run on their problem's tests in ``service.sandbox``."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from service.sandbox import Limits, TestSpec, run_tests
from trainer.config import ExecuteConfig
from trainer.records import ExecSummary, Problem


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
