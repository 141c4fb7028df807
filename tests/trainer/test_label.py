"""MC step labels with the mixture rollout policy: policy samples plus the reference's continuation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.policy import Generation, GenerationRequest
from trainer.config import ExecuteConfig
from trainer.execute import execute_candidate, pass_flags, rollout_executor
from trainer.generate import make_candidate
from trainer.label import aligned_reference, label_candidate
from trainer.records import Problem, TestCase

REFERENCE = '''import sys


def main():
    n = int(sys.stdin.readline())
    print(square(n))


def square(n):
    return n * n


main()
'''
BUGGY_MAIN = REFERENCE.replace("print(square(n))", "print(square(n) + 1)")
PROBLEM = Problem(id="t/square", source="test", prompt="Read n and print n squared.", test_type="stdin",
                  public_tests=[TestCase(type="io", input="3\n", output="9\n")],
                  private_tests=[TestCase(type="io", input="5\n", output="25\n")], canonical_solution=REFERENCE)


class FailingPolicy:
    """A weak policy: every completion is wrong."""

    name = "failing"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        self.requests.append(request)
        return [Generation("\nprint('nope')\n```", "stop", 4) for _ in range(request.n)]

    async def aclose(self) -> None:
        return None


def _labels(code: str, *, rollouts: int, reference_rollouts: int) -> tuple[list[float], FailingPolicy]:
    config = ExecuteConfig(workers=2)
    cand = make_candidate(PROBLEM, "c", code, policy="test", template="test", provenance="mutant")
    cand = cand.model_copy(update={"exec": execute_candidate(PROBLEM, code, config)})

    async def execute(problem: Problem, codes: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(pass_flags, problem, codes, config)

    policy = FailingPolicy()
    labels = asyncio.run(label_candidate(policy, execute, PROBLEM, cand, rollouts=rollouts, temperature=0.8,
                                         top_p=1.0, max_tokens=64, seed=0, reference_rollouts=reference_rollouts))
    return [lb.mc_label for lb in labels], policy


def test_reference_continuation_separates_prefixes_before_and_after_the_bug() -> None:
    # steps: preamble (import), main (buggy in the mutant), square, epilogue (main() call)
    ok, _ = _labels(REFERENCE, rollouts=1, reference_rollouts=3)
    assert ok == [0.75, 0.75, 0.75, 1.0]  # 3 of 4 rollouts pass: the policy's one fails
    bad, policy = _labels(BUGGY_MAIN, rollouts=1, reference_rollouts=3)
    assert bad == [0.75, 0.0, 0.0, 0.0]  # the prefix that holds the bug cannot be completed correctly
    assert len(policy.requests) == 3 and all(r.n == 1 for r in policy.requests)


def test_without_reference_rollouts_the_weak_policy_labels_everything_wrong() -> None:
    labels, _ = _labels(REFERENCE, rollouts=2, reference_rollouts=0)
    assert labels == [0.0, 0.0, 0.0, 1.0]


def test_reference_continuation_only_for_candidates_that_line_up() -> None:
    other = "def main():\n    print(int(input()) ** 2)\n\n\nmain()\n"
    cand = make_candidate(PROBLEM, "p", other, policy="test", template="test")
    assert aligned_reference(PROBLEM, cand) is None
    mutant = make_candidate(PROBLEM, "m", BUGGY_MAIN, policy="test", template="test", provenance="mutant")
    assert aligned_reference(PROBLEM, mutant) == [s.text for s in
                                                 make_candidate(PROBLEM, "r", REFERENCE, policy="t",
                                                                template="t").steps]


def test_rollouts_zero_labels_by_the_reference_alone() -> None:
    ok, policy = _labels(REFERENCE, rollouts=0, reference_rollouts=1)
    assert ok == [1.0, 1.0, 1.0, 1.0] and not policy.requests
    bad, policy = _labels(BUGGY_MAIN, rollouts=0, reference_rollouts=1)
    assert bad == [1.0, 0.0, 0.0, 0.0] and not policy.requests  # exact: right until the mutated step


def test_stop_at_first_failure_keeps_the_verdict_and_counts_up_to_it() -> None:
    full = execute_candidate(PROBLEM, BUGGY_MAIN, ExecuteConfig(workers=1))
    short = execute_candidate(PROBLEM, BUGGY_MAIN, ExecuteConfig(workers=1, stop_at_first_failure=True))
    assert (full.passed, full.n_tests, full.n_passed) == (False, 2, 0)
    assert (short.passed, short.error_kind) == (False, full.error_kind)
    right = execute_candidate(PROBLEM, REFERENCE, ExecuteConfig(workers=1, stop_at_first_failure=True))
    assert (right.passed, right.n_passed) == (True, 2)


def test_the_rollout_executor_runs_a_program_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant's prefix before its mutation continues into the reference itself: every mutant of the problem
    asks for the same program, which runs once; the candidate's own program is never rerun."""
    import trainer.execute

    ran: list[str] = []
    real = trainer.execute.pass_flags

    def counting(problem: Problem, codes: Sequence[str], config: ExecuteConfig) -> list[bool]:
        ran.extend(codes)
        return real(problem, codes, config)

    monkeypatch.setattr(trainer.execute, "pass_flags", counting)
    execute = rollout_executor(ExecuteConfig(workers=1), memo=2)
    assert asyncio.run(execute(PROBLEM, [REFERENCE, BUGGY_MAIN, REFERENCE])) == [True, False, True]
    assert asyncio.run(execute(PROBLEM, [REFERENCE])) == [True] and ran == [REFERENCE, BUGGY_MAIN]
    asyncio.run(execute(PROBLEM, ["print(1)", "print(2)"]))  # memo=2: the reference is evicted
    asyncio.run(execute(PROBLEM, [REFERENCE]))
    assert ran.count(REFERENCE) == 2

    cand = make_candidate(PROBLEM, "m", BUGGY_MAIN, policy="test", template="test", provenance="mutant")
    cand = cand.model_copy(update={"exec": execute_candidate(PROBLEM, BUGGY_MAIN, ExecuteConfig(workers=1))})
    ran.clear()
    labels = asyncio.run(label_candidate(FailingPolicy(), rollout_executor(ExecuteConfig(workers=1)), PROBLEM,
                                         cand, rollouts=0, temperature=0.8, top_p=1.0, max_tokens=64, seed=0,
                                         reference_rollouts=1))
    assert [lb.mc_label for lb in labels] == [1.0, 0.0, 0.0, 0.0] and ran == [REFERENCE]
