"""The resumable stages over one run directory: generate → execute → label → fit → correct →
export → evaluate (DESIGN §7). Each stage appends JSON Lines and keeps a ``run.json`` manifest.

Layout: ``RUN/problems.jsonl`` (problems with their split part), ``RUN/generate/candidates.jsonl``,
``RUN/execute/exec.jsonl``, ``RUN/label/labels.jsonl``, ``RUN/fit/checkpoint``,
``RUN/correct/{labels.jsonl,checkpoint}``, ``RUN/export/checkpoint``, ``RUN/evaluate/``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from service.policy import Policy, make_policy
from trainer.config import ExecuteConfig, GenerateConfig, LabelConfig
from trainer.data import assert_no_leak, check_training_source, load_problems, select_problems, split_problems
from trainer.execute import execute_candidate, rollout_executor
from trainer.generate import generate_candidates, make_candidate
from trainer.label import label_candidate, outcome_labels
from trainer.mutate import mutants as make_mutants
from trainer.records import Candidate, ExecSummary, Problem, StepLabel
from trainer.runs import JsonlStore, progress, stage

logger = logging.getLogger(__name__)

Part = Literal["train", "meta", "dev"]
T = TypeVar("T")
R = TypeVar("R")


class RunProblem(BaseModel):
    part: Part
    problem: Problem


class ExecRecord(BaseModel):
    problem_id: str
    candidate_id: str
    exec: ExecSummary


def problems_store(run: Path) -> JsonlStore[RunProblem]:
    return JsonlStore(run / "problems.jsonl", RunProblem, key=lambda r: r.problem.id)


def candidates_store(run: Path) -> JsonlStore[Candidate]:
    return JsonlStore(run / "generate" / "candidates.jsonl", Candidate, key=lambda c: (c.problem_id, c.candidate_id))


def exec_store(run: Path) -> JsonlStore[ExecRecord]:
    return JsonlStore(run / "execute" / "exec.jsonl", ExecRecord, key=lambda r: (r.problem_id, r.candidate_id))


def labels_store(run: Path, sub: str = "label") -> JsonlStore[StepLabel]:
    return JsonlStore(run / sub / "labels.jsonl", StepLabel,
                      key=lambda r: (r.problem_id, r.candidate_id, r.step_index))


def select_split(data: Path, counts: dict[Part, int], *, allow_any_source: bool = False,
                 difficulties: Collection[str] | None = None) -> list[RunProblem]:
    """The first ``counts[part]`` problems (of ``difficulties``, if given) of each part of the deterministic
    split of ``data``. Filtering happens after the split, so it never moves a problem between parts."""
    check_training_source(data, allow_any=allow_any_source)
    split = split_problems(load_problems(data))
    parts: dict[Part, list[Problem]] = {"train": split.train, "meta": split.meta, "dev": split.dev}
    return [RunProblem(part=part, problem=p) for part, n in counts.items()
            for p in select_problems(parts[part], limit=n, difficulties=difficulties)]


def run_problems(run: Path, *parts: Part) -> list[Problem]:
    return [r.problem for r in problems_store(run).read() if not parts or r.part in parts]


# --- stages ---------------------------------------------------------------------------------

def generate_stage(run: Path, config: GenerateConfig, problems: Sequence[RunProblem], *, references: bool,
                   mutants: int = 0, policy: Policy | None = None) -> int:
    """Candidates for every problem (skipping those done); ``references`` adds each problem's
    reference solution as a candidate of provenance ``reference``, ``mutants`` that many mutants of
    it (one change in one function, ``trainer.mutate``) of provenance ``mutant``. Problems run concurrently (a
    batching server such as vLLM serves them together); each problem's seed is ``seed + its index``."""
    problems_store(run).append(problems)
    store = candidates_store(run)
    with stage(run / "generate", "generate", config) as st:
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
                                                             seed=config.seed + i))]
            return cands

        def save(cands: list[Candidate]) -> None:
            st.count("candidates", store.append(cands))
            st.save()

        _run_all(todo, one, save, policy=policy, config=config if config.n else None,
                 limit=_in_flight(config, max(1, config.n)), desc="generate")
        return st.manifest.counts.get("candidates", 0)


def import_pools(run: Path, pools: Sequence[Path], *, limit: int | None = None,
                 eval_pools: Sequence[Path] = ()) -> int:
    """Real models' candidates (``trainer.pools``) into the run: their problems with the hash split's part
    (``eval_pools``: all in dev), their candidates as provenance ``pool``. Idempotent: a rerun adds nothing
    twice. ``execute`` grades them."""
    from trainer.pools import load_pools

    loaded = load_pools(pools, limit=limit) + load_pools(eval_pools, limit=limit, eval_only=True)
    # a problem already in dev must not come back as training data (nor a dev one as a training problem)
    assert_no_leak({p.id for part, p, _ in loaded if part != "dev"},
                   {r.problem.id for r in problems_store(run).read() if r.part == "dev"})
    assert_no_leak({p.id for part, p, _ in loaded if part == "dev"},
                   {r.problem.id for r in problems_store(run).read() if r.part != "dev"})
    problems_store(run).append(RunProblem(part=part, problem=problem) for part, problem, _ in loaded)
    with stage(run / "generate" / "pools", "import-pools", {"pools": [str(p) for p in pools], "limit": limit,
                                                                 "eval_pools": [str(p) for p in eval_pools]},
               allow_config_change=True) as st:  # additive and idempotent: another pool may join later
        st.count("candidates", candidates_store(run).append(c for _, _, cands in loaded for c in cands))
        return st.manifest.counts.get("candidates", 0)


def _in_flight(config: GenerateConfig, samples_per_item: int) -> int:
    """Items (problems, or candidates being labelled) in flight: enough to keep ``concurrency`` policy
    requests busy on a server; one at a time for an in-process backend."""
    return max(1, config.concurrency // max(1, samples_per_item)) if config.backend == "openai" else 1


def _run_all(items: Sequence[T], work: Callable[[Policy, T], Awaitable[R]], save: Callable[[R], None], *,
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
            active = make_policy(config.policy_spec()) if config is not None else _NoPolicy()
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


class _NoPolicy:
    """The policy of a stage configured to need none: asking it to generate is a bug of the stage."""

    name = "none"

    async def generate(self, request: object) -> list[object]:
        raise RuntimeError("this stage was configured without a policy (generate.n=0 or label.rollouts=0)")

    async def aclose(self) -> None:
        return None


def execute_stage(run: Path, config: ExecuteConfig) -> int:
    """Run every candidate on all its problem's tests (public + private) in the sandbox."""
    problems = {p.id: p for p in run_problems(run)}
    store = exec_store(run)
    with stage(run / "execute", "execute", config, [candidates_store(run).path]) as st:
        done = store.keys()
        todo = [c for c in candidates_store(run).read() if (c.problem_id, c.candidate_id) not in done]
        def run(cand: Candidate) -> ExecRecord:
            summary = execute_candidate(problems[cand.problem_id], cand.code, config)
            if summary.error_kind == "sandbox_error":  # the machine's fault, not the candidate's: never recorded
                raise RuntimeError(f"the sandbox failed on {cand.problem_id}/{cand.candidate_id}; fix it and rerun "
                                   "(what was executed is kept)")
            return ExecRecord(problem_id=cand.problem_id, candidate_id=cand.candidate_id, exec=summary)

        with ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="execute") as pool:
            for record in progress(pool.map(run, todo), total=len(todo), desc="execute"):  # in order
                st.count("executed", store.append([record]))
        return st.manifest.counts.get("executed", 0)


def executed_candidates(run: Path, *parts: Part) -> list[Candidate]:
    """Candidates of the given parts with their execution results joined in."""
    ids = {p.id for p in run_problems(run, *parts)}
    execs = {(r.problem_id, r.candidate_id): r.exec for r in exec_store(run).read()}
    return [c.model_copy(update={"exec": execs[(c.problem_id, c.candidate_id)]})
            for c in candidates_store(run).read()
            if c.problem_id in ids and (c.problem_id, c.candidate_id) in execs]


def label_stage(run: Path, config: LabelConfig, generate: GenerateConfig | None, *,
                policy: Policy | None = None) -> int:
    """Step labels for the executed candidates of the train part (the inner data): MC rollouts from the policy
    (``generate``), or for pool candidates their outcome (``config.pool_labels``)."""
    problems = {p.id: p for p in run_problems(run, "train")}
    train_ids, other_ids = set(problems), {p.id for p in run_problems(run, "meta", "dev")}
    assert_no_leak(train_ids, other_ids, what="meta/dev")
    store = labels_store(run)
    execute = rollout_executor(ExecuteConfig(workers=config.workers, stop_at_first_failure=True))  # verdicts only

    async def one(policy: Policy, cand: Candidate) -> list[StepLabel]:
        return await label_candidate(policy, execute, problems[cand.problem_id], cand, rollouts=config.rollouts,
                                     temperature=config.temperature, top_p=generate.top_p if generate else 1.0,
                                     max_tokens=config.max_tokens, seed=config.seed,
                                     reference_rollouts=config.reference_rollouts)

    with stage(run / "label", "label", config, [exec_store(run).path]) as st:
        done = {(k[0], k[1]) for k in store.keys()}
        todo = [c for c in executed_candidates(run, "train") if (c.problem_id, c.candidate_id) not in done]
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

        _run_all(todo, one, save, policy=policy, config=generate if config.rollouts else None,
                 limit=_in_flight(generate, config.rollouts) if generate and config.rollouts else 8, desc="label")
        return st.manifest.counts.get("labels", 0)


def label_table(run: Path, sub: str = "label") -> dict[tuple[str, str, int], StepLabel]:
    return {(lb.problem_id, lb.candidate_id, lb.step_index): lb for lb in labels_store(run, sub).read()}


def final_labels(candidates: Sequence[Candidate]) -> dict[tuple[str, str, int], StepLabel]:
    """Clean labels from the candidates' own test outcomes, at their last step (the meta set); every key is
    present, so encoding keeps the candidate, and only the last is used."""
    return {(lb.problem_id, lb.candidate_id, lb.step_index): lb for c in candidates for lb in outcome_labels(c)}


def describe(run: Path) -> dict[str, Any]:
    """Counts of what the run holds, for logs and the model card."""
    parts: dict[str, int] = {}
    for r in problems_store(run).read():
        parts[r.part] = parts.get(r.part, 0) + 1
    cands = executed_candidates(run)
    by_source: dict[str, dict[str, int]] = {}
    policy_rates: dict[str, list[int]] = {}  # problem -> [passed, sampled] of the policy's own samples
    for c in cands:
        passed = int(bool(c.exec and c.exec.passed))
        counts = by_source.setdefault(c.provenance, {"candidates": 0, "passed": 0})
        counts["candidates"] += 1
        counts["passed"] += passed
        if c.provenance == "policy":
            rate = policy_rates.setdefault(c.problem_id, [0, 0])
            rate[0] += passed
            rate[1] += 1
    histogram: dict[str, int] = {}
    for n_pass, n in policy_rates.values():
        histogram[f"{n_pass}/{n}"] = histogram.get(f"{n_pass}/{n}", 0) + 1
    labels = list(label_table(run).values())
    prefix = [lb.mc_label for lb in labels if not lb.final]
    from trainer.pools import pool_summary

    return {"problems": parts, "candidates": len(cands), "pool_by_model": pool_summary(cands),
            "candidates_passed": sum(1 for c in cands if c.exec and c.exec.passed),
            "by_provenance": by_source, "policy_passes_per_problem": dict(sorted(histogram.items())),
            "step_labels": len(labels),
            "prefix_labels": {"n": len(prefix), "mean": round(sum(prefix) / len(prefix), 4) if prefix else None,
                              "zero": sum(1 for x in prefix if x == 0.0), "one": sum(1 for x in prefix if x == 1.0)}}
