"""Stage ``generate``: N Chain-of-Function candidates per problem from a policy (DESIGN §7.1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from service.cof import cof_prompt
from service.errors import InvalidInput
from service.policy import Policy, cof_program, cof_request, make_policy
from service.steps import split_code
from trainer.config import GenerateConfig
from trainer.manifest import progress, stage
from trainer.mutate import mutants as make_mutants
from trainer.records import Candidate, Problem, Provenance, StepRecord
from trainer.rundir import RunProblem, candidates_store, problems_store

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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
        steps = [StepRecord.model_validate(s) for s in split.steps]
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


def run(rundir: Path, config: GenerateConfig, problems: Sequence[RunProblem], *, references: bool,
        mutants: int = 0, policy: Policy | None = None) -> int:
    """Candidates for every problem (skipping those done); ``references`` adds each problem's
    reference solution as a candidate of provenance ``reference``, ``mutants`` that many mutants of
    it (one change in one function, ``trainer.mutate``) of provenance ``mutant``. Problems run concurrently (a
    batching server such as vLLM serves them together); each problem's seed is ``seed + its index``."""
    problems_store(rundir).append(problems)
    store = candidates_store(rundir)
    with stage(rundir / "generate", "generate", config) as st:
        done = {k[0] for k in store.keys()}
        todo = [(i, r.problem) for i, r in enumerate(problems) if r.problem.id not in done]

        async def one(policy: Policy, item: tuple[int, Problem]) -> list[Candidate]:
            i, problem = item
            cands = [] if config.n == 0 else await generate_candidates(
                policy, problem, n=config.n, temperature=config.temperature, top_p=config.top_p,
                max_tokens=config.max_tokens, seed=config.seed + i)
            if references and problem.canonical_solution:
                cands.append(make_candidate(problem, "reference", problem.canonical_solution, policy="reference",
                                            template="reference", provenance="reference"))
            if mutants and problem.canonical_solution:
                cands += [make_candidate(problem, f"mutant-{j}", m.code, policy=f"mutant:{m.operator}@{m.step_index}",
                                         template="reference", provenance="mutant")
                          for j, m in enumerate(make_mutants(problem.canonical_solution, count=mutants,
                                                             seed=config.seed + i,
                                                             operators=config.mutant_operators))]
            return cands

        def save(cands: list[Candidate]) -> None:
            st.count("candidates", store.append(cands))
            st.save()

        run_all(todo, one, save, policy=policy, config=config if config.n else None,
                limit=in_flight(config, max(1, config.n)), desc="generate")
        return st.manifest.counts.get("candidates", 0)


def in_flight(config: GenerateConfig, samples_per_item: int) -> int:
    """Items (problems, or candidates being labelled) in flight: enough to keep ``concurrency`` policy
    requests busy on a server; one at a time for an in-process backend."""
    return max(1, config.concurrency // max(1, samples_per_item)) if config.backend == "openai" else 1


def run_all(items: Sequence[T], work: Callable[[Policy, T], Awaitable[R]], save: Callable[[R], None], *,
            policy: Policy | None, config: GenerateConfig | None, limit: int, desc: str) -> None:
    """``work`` on every item, ``limit`` at a time, in one event loop; ``save`` each result as it completes.

    The first failure cancels the rest (what was saved stays saved; a rerun resumes). A policy made here
    (from ``config``) is closed here; one passed in belongs to the caller. Neither: the work needs no policy
    (``generate.n=0``, ``label.rollouts=0``) and gets a stand-in that refuses to generate."""
    async def main() -> None:
        own = policy is None and config is not None
        if policy is not None:
            active = policy
        else:
            active = make_policy(config.policy_spec()) if config is not None else NoPolicy()
        sem = asyncio.Semaphore(limit)

        async def bounded(item: T) -> R:
            async with sem:
                return await work(active, item)

        tasks = [asyncio.create_task(bounded(item)) for item in items]
        try:
            for next_done in progress(asyncio.as_completed(tasks), total=len(tasks), desc=desc):
                save(await next_done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own:
                await active.aclose()

    asyncio.run(main())


class NoPolicy:
    """The policy of a stage configured to need none: asking it to generate is a bug of the stage."""

    name = "none"

    async def generate(self, request: object) -> list[object]:
        raise RuntimeError("this stage was configured without a policy (generate.n=0 or label.rollouts=0)")

    async def aclose(self) -> None:
        return None
