"""The problem sets and candidate pools that ``bench_examples`` measures statement examples on.

Pools (each problem with its candidates and their pass labels):

- ``apps_stdin_all``: every problem of ``candidates/apps_stdin_pool.jsonl`` (49; NOT held out once the
  pool's train part reaches training);
- ``apps_stdin_dev`` / ``mbpp_dev``: the dev part of each pool by the trainer's hash split
  (``trainer.data.split_problems``, the same function training uses);
- ``leetcode_dev_mutants``: dev problems of ``leetcodedataset_train.jsonl`` (same split), candidates = the
  reference solution and up to 3 one-change mutants of it (``trainer.mutate``), labelled by the sandbox on
  every test. Generated without a policy: the CPU policy solves ~0 % of them (README, Trainer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, LEETCODE_TRAIN, read_jsonl
from trainer.data import load_problems, split_problems
from trainer.mutate import mutants
from trainer.records import Problem

POOLS = DATA / "candidates"
SETS: dict[str, Path] = {
    "humaneval": DATA / "humaneval.jsonl",
    "mbpp": DATA / "mbpp.jsonl",
    "leetcode_train": LEETCODE_TRAIN,
    "leetcode_test": DATA / "leetcodedataset_test_shared.jsonl",
    "apps": DATA / "apps_selected150.jsonl",
}
LEETCODE_DEV_LIMIT = 60
MUTANTS = 3


@dataclass(frozen=True, slots=True)
class PoolCandidate:
    code: str
    passed: bool | None  # None: not labelled yet (LeetCode mutants are labelled by the sandbox)
    model: str


@dataclass(frozen=True, slots=True)
class PoolProblem:
    problem: Problem  # statement, entry point, starter code, hidden tests
    candidates: list[PoolCandidate]


def load_set(name: str) -> list[Problem]:
    return load_problems(SETS[name])


def _pool(path: Path) -> list[PoolProblem]:
    out = []
    for row in read_jsonl(path):
        problem = Problem.model_validate(row | {"private_tests": row["tests"]})
        cands = [PoolCandidate(c["code"], bool(c["passed"]), c.get("model", "?")) for c in row["candidates"]]
        out.append(PoolProblem(problem, cands))
    return out


def _dev(pool: Sequence[PoolProblem]) -> list[PoolProblem]:
    dev_ids = {p.id for p in split_problems([p.problem for p in pool]).dev}
    return [p for p in pool if p.problem.id in dev_ids]


def leetcode_dev_mutants(limit: int = LEETCODE_DEV_LIMIT) -> list[PoolProblem]:
    """The first ``limit`` dev problems (hash split) that have a reference and at least one mutant."""
    out = []
    for problem in split_problems(load_problems(LEETCODE_TRAIN)).dev:
        ref = problem.canonical_solution
        if not ref:
            continue
        muts = mutants(ref, count=MUTANTS, seed=0)
        if not muts:
            continue
        cands = [PoolCandidate(ref, None, "reference")] + [PoolCandidate(m.code, None, f"mutant:{m.operator}")
                                                            for m in muts]
        out.append(PoolProblem(problem, cands))
        if len(out) == limit:
            break
    return out


def load_pools() -> dict[str, list[PoolProblem]]:
    apps = _pool(POOLS / "apps_stdin_pool.jsonl")
    return {"apps_stdin_all": apps, "apps_stdin_dev": _dev(apps), "mbpp_dev": _dev(_pool(POOLS / "mbpp_pool.jsonl")),
            "leetcode_dev_mutants": leetcode_dev_mutants()}


def candidate_key(problem: str, code: str) -> str:
    """The PRM-score cache key of one (statement, program) pair."""
    return hashlib.sha256(json.dumps([problem, code]).encode()).hexdigest()[:32]


def summary(pools: dict[str, list[PoolProblem]]) -> dict[str, Any]:
    return {name: {"problems": len(pool), "candidates": sum(len(p.candidates) for p in pool)}
            for name, pool in pools.items()}
