"""Problem loading and the train / meta / dev split that keeps evaluation honest (DESIGN §7, §9).

Stdlib and pydantic only. Training data comes only from ``leetcodedataset_train.jsonl``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from trainer.records import Problem

logger = logging.getLogger(__name__)

TRAINING_FILE = "leetcodedataset_train.jsonl"
BUCKETS = 1000


class DataLeakError(ValueError):
    """Problems used for training (or label correction) would also be used for evaluation."""


def load_problems(path: str | Path) -> list[Problem]:
    """Every problem of a JSON Lines file in the ``../shared/data`` format, in file order.

    A row that repeats an earlier one exactly is dropped with a warning (``apps_selected150.jsonl`` has 22:
    128 distinct problems); counting it twice would weight it twice in every metric.

    Raises:
        ValueError: a line that is not a valid problem (with its line number), or an id reused by a different problem.
    """
    problems: dict[str, Problem] = {}
    repeats = 0
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                problem = Problem.model_validate_json(line)
            except ValidationError as exc:
                raise ValueError(f"{path}:{lineno}: not a valid problem: {exc}") from exc
            if (first := problems.setdefault(problem.id, problem)) is not problem:
                if first != problem:
                    raise ValueError(f"{path}:{lineno}: problem id {problem.id!r} is reused by a different problem")
                repeats += 1
    if repeats:
        logger.warning("%s: dropped %d exact repeat(s) of earlier problems", path, repeats)
    logger.info("loaded %d problems from %s", len(problems), path)
    return list(problems.values())


def check_training_source(path: str | Path, *, allow_any: bool = False) -> Path:
    """``path`` if it may feed training: only ``leetcodedataset_train.jsonl`` may; every other set is for evaluation.

    ``allow_any`` (tests, tiny fixtures) lifts the check, with a warning. Symlinks are resolved first.
    """
    resolved = Path(path).resolve()
    if resolved.name != TRAINING_FILE:
        if not allow_any:
            raise DataLeakError(f"{path} may not be used for training: only {TRAINING_FILE} is a training set; "
                                "the other problem sets are evaluation-only (DESIGN §7)")
        logger.warning("training on %s, which is not %s (override given)", path, TRAINING_FILE)
    return Path(path)


def split_key(problem: Problem) -> str:
    """What the split hashes: the LeetCode ``metadata.question_id``, else the problem id."""
    question_id = problem.metadata.get("question_id")
    return str(question_id) if question_id is not None else problem.id


def split_bucket(problem: Problem) -> int:
    """sha256 of ``split_key`` mod 1000: a stable, seed-free bucket per problem."""
    return int(hashlib.sha256(split_key(problem).encode()).hexdigest(), 16) % BUCKETS


@dataclass(frozen=True, slots=True)
class Split:
    """Pairwise disjoint: ``train`` (inner data), ``meta`` (meta set of label correction), ``dev`` (held out)."""

    train: list[Problem]
    meta: list[Problem]
    dev: list[Problem]


def split_problems(problems: Sequence[Problem], dev_fraction: float = 0.1, meta_fraction: float = 0.1) -> Split:
    """Split by bucket: ``[0, 1000·dev)`` dev, the next ``1000·meta`` buckets meta, the rest train.

    Deterministic and stable across runs and machines (no seed). Changing ``meta_fraction`` never moves a
    dev problem; input order is kept within each part.
    """
    if not (0 <= dev_fraction <= 1 and 0 <= meta_fraction <= 1 and dev_fraction + meta_fraction <= 1):
        raise ValueError(f"need 0 <= dev_fraction, meta_fraction and their sum <= 1; got {dev_fraction}, "
                         f"{meta_fraction}")
    dev_end = round(BUCKETS * dev_fraction)
    meta_end = dev_end + round(BUCKETS * meta_fraction)
    parts: dict[str, list[Problem]] = {"train": [], "meta": [], "dev": []}
    for problem in problems:
        bucket = split_bucket(problem)
        parts["dev" if bucket < dev_end else "meta" if bucket < meta_end else "train"].append(problem)
    split = Split(**parts)
    assert_no_leak([split_key(p) for p in split.train + split.meta], [split_key(p) for p in split.dev])
    logger.info("split %d problems: %d train, %d meta, %d dev", len(problems), len(split.train), len(split.meta),
                len(split.dev))
    return split


def assert_no_leak(train_ids: Iterable[Hashable], eval_ids: Iterable[Hashable], *, what: str = "evaluation") -> None:
    """Raise ``DataLeakError`` if any id is in both sets (compare like with like: ids or ``split_key``s)."""
    overlap = set(train_ids) & set(eval_ids)
    if overlap:
        shown = ", ".join(sorted(map(str, overlap))[:10])
        raise DataLeakError(f"{len(overlap)} problem(s) used for training are also in the {what} set: {shown}"
                            + (" ..." if len(overlap) > 10 else ""))


def select_problems(problems: Sequence[Problem], *, limit: int | None = None,
                    difficulties: Collection[str] | None = None, ids: Collection[str] | None = None) -> list[Problem]:
    """The problems with one of ``ids`` and one of ``difficulties`` (case-insensitive), first ``limit``, in order.

    Raises:
        KeyError: an id in ``ids`` that no problem has (a typo should not silently shrink a run).
        ValueError: a negative ``limit``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    selected = list(problems)
    if ids is not None:
        wanted = set(ids)
        missing = wanted - {p.id for p in selected}
        if missing:
            raise KeyError(f"unknown problem id(s): {', '.join(sorted(missing)[:10])}")
        selected = [p for p in selected if p.id in wanted]
    if difficulties is not None:
        levels = {d.lower() for d in difficulties}
        selected = [p for p in selected if (p.difficulty or "").lower() in levels]
    return selected if limit is None else selected[:limit]
