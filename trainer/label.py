"""Stage ``label``: Monte-Carlo step labels by rollouts from each function prefix (DESIGN §7.3).

For step k < K-1: M completions of the program from steps[0..k], each executed on the tests;
soft label = pass rate, hard label = any pass. The final step's label is the candidate's own,
clean, test outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from service.cof import CODE_STOP, assistant_prefix
from service.policy import GenerationRequest, Policy
from service.steps import extract_code
from trainer.generate import problem_prompt
from trainer.records import Candidate, Problem, StepLabel

logger = logging.getLogger(__name__)

# runs programs on a problem's tests in the sandbox; True where the program passed all of them
Executor = Callable[[Problem, Sequence[str]], Awaitable[list[bool]]]


def prefix_code(candidate: Candidate, k: int) -> str:
    """The program text of steps 0..k."""
    return "".join(s.text for s in candidate.steps[: k + 1])


def complete_program(code_prefix: str, continuation: str) -> str:
    """The rollout program: the prefix, then what the policy wrote after it (up to the fence)."""
    return extract_code(assistant_prefix(code_prefix) + continuation)


async def label_candidate(policy: Policy, execute: Executor, problem: Problem, candidate: Candidate, *,
                          rollouts: int, temperature: float, top_p: float, max_tokens: int,
                          seed: int) -> list[StepLabel]:
    """Step labels of one executed candidate (its ``exec`` must be set)."""
    if candidate.exec is None:
        raise ValueError(f"candidate {candidate.candidate_id} of {problem.id} has not been executed")
    n_steps = len(candidate.steps)
    if n_steps == 0:
        return []
    _, messages = problem_prompt(problem)

    async def rollout_labels(k: int) -> StepLabel:
        code = prefix_code(candidate, k)
        request = GenerationRequest(messages, n=rollouts, prefix=assistant_prefix(code), temperature=temperature,
                                    top_p=top_p, max_tokens=max_tokens, seed=seed + k, stop=CODE_STOP)
        generations = await policy.generate(request)
        passed = await execute(problem, [complete_program(code, g.text) for g in generations])
        n_pass = sum(passed)
        return StepLabel(problem_id=problem.id, candidate_id=candidate.candidate_id, step_index=k,
                         mc_label=n_pass / len(passed), n_rollouts=len(passed), n_pass=n_pass, final=False)

    labels = list(await asyncio.gather(*(rollout_labels(k) for k in range(n_steps - 1))))
    outcome = int(candidate.exec.passed)
    labels.append(StepLabel(problem_id=problem.id, candidate_id=candidate.candidate_id, step_index=n_steps - 1,
                            mc_label=float(outcome), n_rollouts=1, n_pass=outcome, final=True))
    return labels


def hard_label(label: StepLabel) -> int:
    """Any rollout passed (the hard-label variant)."""
    return int(label.n_pass > 0)
