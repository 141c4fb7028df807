"""A run directory's layout and stores (DESIGN §7): ``RUN/problems.jsonl`` (problems with their split part),
``RUN/generate/candidates.jsonl``, ``RUN/execute/exec.jsonl``, ``RUN/label/labels.jsonl``, ``RUN/fit/checkpoint``,
``RUN/correct/{labels.jsonl,checkpoint}``, ``RUN/export/checkpoint``, ``RUN/evaluate/``. Each stage module
(``trainer.{generate,execute,label,fit,correct,evaluate,export}``) owns ``run(rundir, config, ...)``."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from trainer.data import check_training_source, load_problems, select_problems, split_problems
from trainer.records import Candidate, ExecSummary, Problem, StepLabel
from trainer.store import JsonlStore

Part = Literal["train", "meta", "dev"]
# the run's PRM checkpoints by scorer name (``evaluate`` scores each, ``export`` ships one)
SCORERS = {"prm_corrected": "correct/checkpoint", "prm_uncorrected": "correct/uncorrected", "prm_fit": "fit/checkpoint"}
BASELINE_SCORERS = {"orm": "orm/checkpoint"}  # evaluated beside the PRMs, never exported as the PRM


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


def run_problems(run: Path, *parts: Part) -> list[Problem]:
    return [r.problem for r in problems_store(run).read() if not parts or r.part in parts]


def executed_candidates(run: Path, *parts: Part) -> list[Candidate]:
    """Candidates of the given parts with their execution results joined in."""
    ids = {p.id for p in run_problems(run, *parts)}
    execs = {(r.problem_id, r.candidate_id): r.exec for r in exec_store(run).read()}
    return [c.model_copy(update={"exec": execs[(c.problem_id, c.candidate_id)]})
            for c in candidates_store(run).read()
            if c.problem_id in ids and (c.problem_id, c.candidate_id) in execs]


def label_table(run: Path, sub: str = "label") -> dict[tuple[str, str, int], StepLabel]:
    return {(lb.problem_id, lb.candidate_id, lb.step_index): lb for lb in labels_store(run, sub).read()}


def select_split(data: Path, counts: dict[Part, int], *, allow_any_source: bool = False,
                 difficulties: Collection[str] | None = None) -> list[RunProblem]:
    """The first ``counts[part]`` problems (of ``difficulties``, if given) of each part of the deterministic
    split of ``data``. Filtering happens after the split, so it never moves a problem between parts."""
    check_training_source(data, allow_any=allow_any_source)
    split = split_problems(load_problems(data))
    parts: dict[Part, list[Problem]] = {"train": split.train, "meta": split.meta, "dev": split.dev}
    return [RunProblem(part=part, problem=p) for part, n in counts.items()
            for p in select_problems(parts[part], limit=n, difficulties=difficulties)]

