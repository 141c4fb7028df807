"""A scripted policy for pipeline tests: reference solutions, some of them sabotaged."""

from __future__ import annotations

import random

from service.policy import Generation, GenerationRequest
from trainer.records import Problem

SABOTAGE = "\nSolution = None\n"  # appended: every LeetCode test then fails


class FakePolicy:
    """Generation: the reference (or a sabotaged copy); rollouts: the reference's continuation of the
    prefix, sabotaged with probability ``p_bad``. Deterministic per request seed."""

    name = "fake-policy"

    def __init__(self, problems: list[Problem], p_bad: float = 0.5) -> None:
        self.references = {p.prompt.strip(): p.canonical_solution or "" for p in problems}
        self.p_bad = p_bad
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        self.requests.append(request)
        user = request.messages[-1]["content"]
        reference = next(ref for prompt, ref in self.references.items() if prompt in user)
        code_prefix = request.prefix.removeprefix("```python\n")
        rest = reference[len(code_prefix):] if reference.startswith(code_prefix) else ""
        rng = random.Random(request.seed)
        out = []
        for _ in range(request.n):
            text = rest + (SABOTAGE if rng.random() < self.p_bad else "")
            out.append(Generation(text + "```", "stop", len(text) // 4))
        return out

    async def aclose(self) -> None:
        return None
