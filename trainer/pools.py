"""Real models' candidates in a run (issue 12): pools of ``../shared/data/candidates`` as problems + candidates.

A pool file holds, per problem, its prompt, tests and the candidates that GPT/Qwen models wrote (with the
source's pass/fail, which we do not use: ``execute`` re-runs every candidate in our sandbox). Problems are split
into train / meta / dev by the same hash as every other problem (``trainer.data.split_problems``).
Stdlib and pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from trainer.data import DataLeakError, assert_no_leak, split_problems
from trainer.generate import make_candidate
from trainer.manifest import stage
from trainer.records import Candidate, Problem, TestCase
from trainer.rundir import Part, RunProblem, candidates_store, problems_store

logger = logging.getLogger(__name__)

POOL_DIR = "candidates"  # pools may feed training only from this folder of the shared data


class PoolCandidate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str
    passed: bool | None = None  # the source's label: kept for reference, never trained on
    model: str
    method: str | None = None


class PoolProblem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    source: str
    prompt: str
    entry_point: str | None = None
    test_type: Literal["functional", "stdin"]
    tests: list[TestCase]
    candidates: list[PoolCandidate]

    def problem(self) -> Problem:
        """The problem record; the pool's tests are private tests (all of them grade)."""
        return Problem(id=self.id, source=self.source, prompt=self.prompt, entry_point=self.entry_point,
                       test_type=self.test_type, private_tests=self.tests, metadata={"pool": True})


def check_pool_source(path: str | Path) -> Path:
    """``path`` if it is a candidate pool of the shared data (``.../candidates/*.jsonl``); else ``DataLeakError``."""
    resolved = Path(path).resolve()
    if resolved.parent.name != POOL_DIR:
        raise DataLeakError(f"{path} is not a candidate pool (a file of the shared data's {POOL_DIR}/ folder); "
                            "only those pools and the LeetCode training set may feed training")
    return Path(path)


def read_pool(path: str | Path) -> list[PoolProblem]:
    with Path(path).open(encoding="utf-8") as fh:
        return [PoolProblem.model_validate_json(line) for line in fh if line.strip()]


def candidate_id(cand: PoolCandidate) -> str:
    """Stable id: model, method and a hash of the code (a pool may hold the same code twice: kept once)."""
    digest = hashlib.sha256(cand.code.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cand.model}:{cand.method or '-'}:{digest}"


def pool_candidates(row: PoolProblem, problem: Problem) -> Iterator[Candidate]:
    seen: set[str] = set()
    for cand in row.candidates:
        cid = candidate_id(cand)
        if cid in seen:
            continue
        seen.add(cid)
        record = make_candidate(problem, cid, cand.code, policy=cand.model, template="pool", provenance="pool")
        yield record.model_copy(update={"model": cand.model, "method": cand.method})


def load_pools(paths: Sequence[str | Path], *, parts: Sequence[Part] = ("train", "meta", "dev"),
               limit: int | None = None, eval_only: bool = False, dev_fraction: float = 0.1,
               ) -> list[tuple[Part, Problem, list[Candidate]]]:
    """Each pool problem of ``parts`` (hash split, ``dev_fraction`` of them in dev), with its candidates;
    ``limit`` problems per part and file.

    ``eval_only``: every problem of the pool goes to ``dev`` (a pool kept out of training entirely, so that all
    of it is held out: e.g. the 49 APPS problems, which the statement-examples benchmark reports on whole)."""
    out: list[tuple[Part, Problem, list[Candidate]]] = []
    for path in paths:
        rows = {r.id: r for r in read_pool(check_pool_source(path))}
        problems = [r.problem() for r in rows.values()]
        split = split_problems(problems, dev_fraction=dev_fraction)
        by_part: dict[Part, list[Problem]] = {"train": split.train, "meta": split.meta, "dev": split.dev}
        if eval_only:
            by_part = {"train": [], "meta": [], "dev": problems}
        for part in parts:
            for problem in by_part[part][:limit]:
                out.append((part, problem, list(pool_candidates(rows[problem.id], problem))))
        logger.info("pool %s: %s", path, {p: len(by_part[p]) for p in parts})
    return out


def pool_summary(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """Candidates and passes per model (of executed pool candidates), for the model card."""
    by_model: dict[str, dict[str, int]] = {}
    for c in candidates:
        if c.provenance != "pool":
            continue
        row = by_model.setdefault(c.model or "?", {"candidates": 0, "passed": 0})
        row["candidates"] += 1
        row["passed"] += int(bool(c.exec and c.exec.passed))
    return json.loads(json.dumps(by_model, sort_keys=True))


def import_pools(run: Path, pools: Sequence[Path], *, limit: int | None = None,
                 eval_pools: Sequence[Path] = (), dev_fraction: float = 0.1) -> int:
    """Real models' candidates (``trainer.pools``) into the run: their problems with the hash split's part
    (``eval_pools``: all in dev), their candidates as provenance ``pool``. Idempotent: a rerun adds nothing
    twice. ``execute`` grades them."""
    loaded = load_pools(pools, limit=limit, dev_fraction=dev_fraction) + \
        load_pools(eval_pools, limit=limit, eval_only=True)
    # a problem already in dev must not come back as training data (nor a dev one as a training problem)
    assert_no_leak({p.id for part, p, _ in loaded if part != "dev"},
                   {r.problem.id for r in problems_store(run).read() if r.part == "dev"})
    assert_no_leak({p.id for part, p, _ in loaded if part == "dev"},
                   {r.problem.id for r in problems_store(run).read() if r.part != "dev"})
    problems_store(run).append(RunProblem(part=part, problem=problem) for part, problem, _ in loaded)
    with stage(run / "generate" / "pools", "import-pools", {"pools": [str(p) for p in pools], "limit": limit,
                                                                 "eval_pools": [str(p) for p in eval_pools],
                                                                 "dev_fraction": dev_fraction},
               allow_config_change=True) as st:  # additive and idempotent: another pool may join later
        st.count("candidates", candidates_store(run).append(c for _, _, cands in loaded for c in cands))
        return st.manifest.counts.get("candidates", 0)
