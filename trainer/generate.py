"""Stage ``generate``: N Chain-of-Function candidates per problem from a policy (DESIGN §7.1)."""

from __future__ import annotations

import logging

from service.cof import cof_prompt
from service.errors import InvalidInput
from service.policy import Policy, cof_program, cof_request
from service.steps import split_code
from trainer.records import Candidate, Problem, Provenance, StepRecord

logger = logging.getLogger(__name__)

def problem_prompt(problem: Problem) -> tuple[str, list[dict[str, str]]]:
    """(template id, chat messages) of the CoF prompt for ``problem``."""
    prompt = cof_prompt(problem.prompt, test_type=problem.test_type, starter_code=problem.starter_code,
                        entry_point=problem.entry_point)
    return prompt.template, prompt.messages


def make_candidate(problem: Problem, candidate_id: str, code: str, *, policy: str, template: str,
                   provenance: Provenance = "policy") -> Candidate:
    """A candidate record with its steps (from the service's splitter: one splitter everywhere)."""
    try:
        split = split_code(code)
        steps = [StepRecord(index=s.index, kind=s.kind, name=s.name, start_line=s.start_line,
                            end_line=s.end_line, start_byte=s.start_byte, end_byte=s.end_byte, text=s.text)
                 for s in split.steps]
        parsed = split.parsed
    except InvalidInput:  # empty or statement-free generation: kept, it fails its tests
        steps, parsed = [], False
    return Candidate(problem_id=problem.id, candidate_id=candidate_id, policy=policy, prompt_template=template,
                     provenance=provenance, code=code, parsed=parsed, steps=steps)


async def generate_candidates(policy: Policy, problem: Problem, *, n: int, temperature: float, top_p: float,
                              max_tokens: int, seed: int) -> list[Candidate]:
    """``n`` CoF candidates for one problem; ids are stable (``s<seed>-<i>``) so reruns resume."""
    template, messages = problem_prompt(problem)
    request = cof_request(messages, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    generations = await policy.generate(request)
    return [make_candidate(problem, f"s{seed}-{i}", cof_program(request, g), policy=policy.name, template=template)
            for i, g in enumerate(generations)]
