"""Stage ``label``: Monte-Carlo step labels by rollouts from each function prefix (DESIGN §7.3).

For step k < K-1: M completions of the program from steps[0..k], each executed on the tests;
soft label = pass rate, hard label = any pass. The final step's label is the candidate's own,
clean, test outcome.

Optionally the rollout policy is a mixture: besides the M policy samples, R rollouts continue the
prefix with the problem's reference solution — for candidates whose steps line up with the reference
step for step (same kinds and names: the reference itself, its mutants, which change one function, and
policy samples of the same shape, e.g. LeetCode's ``class Solution`` with the same methods; for those
the continuation is an attempt like any rollout and fails when the prefix does not fit it). That
continuation is deterministic, so it is run once and counts R times. With a weak policy (SmolLM2-135M passes almost
nothing) the policy samples alone would label every prefix 0; the mixture keeps their noise (a correct
prefix gets R/(M+R) when the policy fails from it) while a prefix that already holds the bug gets 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from service.errors import InvalidInput
from service.policy import Policy, cof_program, cof_request
from service.steps import split_code
from trainer.config import ExecuteConfig, GenerateConfig, LabelConfig
from trainer.data import assert_no_leak
from trainer.execute import rollout_executor
from trainer.generate import in_flight, problem_prompt, run_all
from trainer.manifest import stage
from trainer.records import Candidate, Problem, StepLabel
from trainer.rundir import exec_store, executed_candidates, labels_store, run_problems

logger = logging.getLogger(__name__)

# runs programs on a problem's tests in the sandbox; True where the program passed all of them
Executor = Callable[[Problem, Sequence[str]], Awaitable[list[bool]]]


def prefix_code(candidate: Candidate, k: int) -> str:
    """The program text of steps 0..k."""
    return "".join(s.text for s in candidate.steps[: k + 1])


async def label_candidate(policy: Policy, execute: Executor, problem: Problem, candidate: Candidate, *,
                          rollouts: int, temperature: float, top_p: float, max_tokens: int,
                          seed: int, reference_rollouts: int = 0) -> list[StepLabel]:
    """Step labels of one executed candidate (its ``exec`` must be set): ``rollouts`` policy samples per
    prefix, plus ``reference_rollouts`` (a weight) for the reference's continuation where it lines up.
    ``rollouts=0``: the reference's continuation alone, which labels a reference's or a mutant's steps exactly
    (a prefix before the mutated function passes with the reference's rest); a candidate the reference does
    not line up with then gets its own outcome on every step."""
    if candidate.exec is None:
        raise ValueError(f"candidate {candidate.candidate_id} of {problem.id} has not been executed")
    n_steps = len(candidate.steps)
    if n_steps == 0:
        return []
    _, messages = problem_prompt(problem)

    reference = aligned_reference(problem, candidate) if reference_rollouts else None
    if not rollouts and reference is None:  # nothing can continue it: every step gets its outcome
        return outcome_labels(candidate)

    async def rollout_labels(k: int) -> StepLabel:
        code = prefix_code(candidate, k)
        codes: list[str] = []
        if rollouts:
            request = cof_request(messages, n=rollouts, code_prefix=code, temperature=temperature, top_p=top_p,
                                  max_tokens=max_tokens, seed=seed + k)
            codes = [cof_program(request, g) for g in await policy.generate(request)]
        weights = [1] * len(codes)
        known: list[bool] = []  # the reference's continuation that rebuilds the candidate itself: its verdict
        if reference is not None:
            continued = code + "".join(reference[k + 1:])
            if continued == candidate.code:
                known.append(bool(candidate.exec.passed))
            else:
                codes.append(continued)
            weights.append(reference_rollouts)
        passed = (await execute(problem, codes) if codes else []) + known
        n_pass = sum(w for w, ok in zip(weights, passed, strict=True) if ok)
        return StepLabel(problem_id=problem.id, candidate_id=candidate.candidate_id, step_index=k,
                         mc_label=n_pass / sum(weights), n_rollouts=sum(weights), n_pass=n_pass, final=False)

    labels = list(await asyncio.gather(*(rollout_labels(k) for k in range(n_steps - 1))))
    outcome = int(candidate.exec.passed)
    labels.append(StepLabel(problem_id=problem.id, candidate_id=candidate.candidate_id, step_index=n_steps - 1,
                            mc_label=float(outcome), n_rollouts=1, n_pass=outcome, final=True))
    return labels


def outcome_labels(c: Candidate) -> list[StepLabel]:
    """Every step labelled with the candidate's own test outcome (the final one is clean, the others noisy:
    a failing program's early functions may be right; meta correction learns which)."""
    if not c.steps or c.exec is None:
        return []
    passed = int(c.exec.passed)
    return [StepLabel(problem_id=c.problem_id, candidate_id=c.candidate_id, step_index=s.index,
                      mc_label=float(passed), n_rollouts=1, n_pass=passed, final=s.index == len(c.steps) - 1)
            for s in c.steps]


def aligned_reference(problem: Problem, candidate: Candidate) -> list[str] | None:
    """The reference solution's step texts when the candidate's steps match them one for one (same
    count, kinds and names: the reference, its mutants, policy samples of the same shape); else None."""
    if not problem.canonical_solution or not candidate.steps:
        return None
    try:
        steps = split_code(problem.canonical_solution).steps
    except InvalidInput:
        return None
    same = len(steps) == len(candidate.steps) and all(
        (s.kind, s.name) == (c.kind, c.name) for s, c in zip(steps, candidate.steps, strict=True))
    return [s.text for s in steps] if same else None


def hard_label(label: StepLabel) -> int:
    """Any rollout passed (the hard-label variant)."""
    return int(label.n_pass > 0)


def run(rundir: Path, config: LabelConfig, generate: GenerateConfig | None, *,
        policy: Policy | None = None) -> int:
    """Step labels for the executed candidates of the train part (the inner data): MC rollouts from the policy
    (``generate``), or for pool candidates their outcome (``config.pool_labels``)."""
    problems = {p.id: p for p in run_problems(rundir, "train")}
    train_ids, other_ids = set(problems), {p.id for p in run_problems(rundir, "meta", "dev")}
    assert_no_leak(train_ids, other_ids, what="meta/dev")
    store = labels_store(rundir)
    execute = rollout_executor(ExecuteConfig(workers=config.workers, stop_at_first_failure=True))  # verdicts only

    async def one(policy: Policy, cand: Candidate) -> list[StepLabel]:
        return await label_candidate(policy, execute, problems[cand.problem_id], cand, rollouts=config.rollouts,
                                     temperature=config.temperature, top_p=generate.top_p if generate else 1.0,
                                     max_tokens=config.max_tokens, seed=config.seed,
                                     reference_rollouts=config.reference_rollouts)

    with stage(rundir / "label", "label", config, [exec_store(rundir).path]) as st:
        done = {(k[0], k[1]) for k in store.keys()}
        todo = [c for c in executed_candidates(rundir, "train") if (c.problem_id, c.candidate_id) not in done]
        if config.pool_labels == "outcome":  # no policy can continue a strong model's prefix: its outcome
            pool = [c for c in todo if c.provenance == "pool"]
            st.count("labels", store.append(lb for c in pool for lb in outcome_labels(c)))
            st.save()
            todo = [c for c in todo if c.provenance != "pool"]
            if not todo:
                return st.manifest.counts.get("labels", 0)
        if generate is None and config.rollouts:
            raise ValueError(f"{len(todo)} candidates need rollouts from a policy: set the generate section "
                             "(--set generate.model=... generate.backend=...)")

        def save(labels: list[StepLabel]) -> None:
            st.count("labels", store.append(labels))
            st.count("rollouts", sum(lb.n_rollouts for lb in labels if not lb.final))
            st.save()

        run_all(todo, one, save, policy=policy, config=generate if config.rollouts else None,
                limit=in_flight(generate, config.rollouts) if generate and config.rollouts else 8, desc="label")
        return st.manifest.counts.get("labels", 0)


def final_labels(candidates: Sequence[Candidate]) -> dict[tuple[str, str, int], StepLabel]:
    """Clean labels from the candidates' own test outcomes, at their last step (the meta set); every key is
    present, so encoding keeps the candidate, and only the last is used."""
    return {(lb.problem_id, lb.candidate_id, lb.step_index): lb for c in candidates for lb in outcome_labels(c)}
