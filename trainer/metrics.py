"""Best-of-N evaluation (DESIGN §7 evaluate, §9): selected pass@1, baselines, AUROC, bootstrap CIs, calibration.

Pure numpy over in-memory candidates; imports only numpy and ``service.aggregate`` (no torch, no plotting).
One pipeline over shared arrays (table, selection, bootstrap, calibration, report rows), hence one module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from service.aggregate import AGGREGATIONS, Aggregation, aggregate

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Key = tuple[str, Aggregation]  # (scorer, aggregation)
UNKNOWN_DIFFICULTY = "unknown"
UNSCORED = -1.0  # rank score of a candidate with no steps: below every probability, above the padding (-inf)
# LeetCode (easy/medium/hard) and APPS (introductory/interview/competition) in rising difficulty
DIFFICULTY_ORDER = ("easy", "introductory", "medium", "interview", "hard", "competition")


@dataclass(frozen=True, slots=True)
class EvalCandidate:
    """One graded candidate; ``step_logits``: scorer name -> per-step logits (empty: no steps, ranked last)."""

    problem_id: str
    candidate_id: str
    passed: bool
    difficulty: str | None
    step_logits: Mapping[str, Sequence[float]]
    step_context: Sequence[bool] | None = None  # aligned with the steps: context steps leave the aggregates


@dataclass(frozen=True, slots=True)
class Baseline:
    """A row to compare every row against; an unset field means "the same as the compared row"."""

    scorer: str | None = None
    aggregation: Aggregation | None = None

    @classmethod
    def parse(cls, spec: str) -> Baseline:
        """``"last"`` (same scorer, ORM-like), ``"prm_uncorrected"`` (same aggregation) or ``"scorer/agg"``."""
        scorer, sep, agg = spec.partition("/")
        if not sep:
            scorer, agg = ("", spec) if spec in AGGREGATIONS else (spec, "")
        if agg and agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {agg!r} in baseline {spec!r}")
        return cls(scorer or None, agg if agg else None)

    @property
    def name(self) -> str:
        return "/".join(p for p in (self.scorer, self.aggregation) if p)

    def resolve(self, scorer: str, aggregation: Aggregation) -> tuple[str, Aggregation]:
        return self.scorer or scorer, self.aggregation or aggregation


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean over problems with its percentile-bootstrap 95 % interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """Problems this row solves and ``against`` does not (gained), the reverse (lost), and the paired Δ."""

    baseline: str
    against: str
    gained: int
    lost: int
    delta: Estimate


@dataclass(frozen=True, slots=True)
class Calibration:
    """Equal-width reliability bins on [0, 1] (``edges`` has bins + 1 entries; None marks an empty bin)."""

    edges: tuple[float, ...]
    count: tuple[int, ...]
    mean_predicted: tuple[float | None, ...]
    observed: tuple[float | None, ...]
    brier: float
    ece: float  # count-weighted mean |mean_predicted - observed|


@dataclass(frozen=True, slots=True)
class ScorerResult:
    """Metrics of one (scorer, aggregation) row; ``selected`` breaks score ties by the smallest candidate_id (str)."""

    scorer: str
    aggregation: Aggregation
    selected: Estimate
    selected_expected: Estimate  # ties averaged: the expected pass rate of a uniform pick among the top scores
    auroc: float | None
    comparisons: tuple[Comparison, ...]
    calibration: Calibration

    @property
    def key(self) -> str:
        return f"{self.scorer}/{self.aggregation}"


@dataclass(frozen=True, slots=True)
class DifficultyRow:
    difficulty: str
    n_problems: int
    n_candidates: int
    random: float
    oracle: float
    selected: Mapping[str, float]  # ScorerResult.key -> selected pass@1 on these problems


@dataclass(frozen=True, slots=True)
class BestOfN:
    """Selected pass@1 on random size-n candidate subsets (all candidates where a problem has fewer)."""

    ns: tuple[int, ...]
    repeats: int
    oracle: tuple[float, ...]
    random: float
    selected: Mapping[str, tuple[float, ...]]  # ScorerResult.key -> one value per n


@dataclass(frozen=True, slots=True)
class EvalReport:
    metadata: Mapping[str, str]
    n_problems: int
    n_candidates: int
    n_min: int  # fewest candidates of a problem
    n_max: int
    bootstrap: int
    seed: int
    random: Estimate
    oracle: Estimate
    unscored: Mapping[str, int]  # scorer -> candidates without steps (ranked last; P = 0 in AUROC and calibration)
    results: tuple[ScorerResult, ...]
    by_difficulty: tuple[DifficultyRow, ...]
    best_of_n: BestOfN

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Table:
    """Candidates as (problems, n_max) arrays, sorted by candidate_id within a problem; padding is invalid."""

    difficulty: tuple[str, ...]
    valid: BoolArray
    passed: BoolArray
    scores: Mapping[Key, FloatArray]  # -inf on padding
    unscored: Mapping[str, int]


def _difficulty(problem_id: str, group: Sequence[EvalCandidate]) -> str:
    labels = {c.difficulty for c in group if c.difficulty}
    if len(labels) > 1:
        raise ValueError(f"problem {problem_id!r} has conflicting difficulties {sorted(labels)}")
    return labels.pop() if labels else UNKNOWN_DIFFICULTY


def _aggregates(c: EvalCandidate, scorer: str) -> dict[Aggregation, float] | None:
    logits = c.step_logits.get(scorer)
    if logits is None or not all(math.isfinite(x) for x in logits):
        raise ValueError(f"candidate {c.problem_id}/{c.candidate_id} has no finite step logits for {scorer!r}")
    return aggregate(logits, c.step_context) if logits else None


def _build_table(candidates: Sequence[EvalCandidate], scorers: Sequence[str],
                 aggregations: Sequence[Aggregation]) -> _Table:
    groups: dict[str, list[EvalCandidate]] = {}
    for c in candidates:
        groups.setdefault(c.problem_id, []).append(c)
    if not groups:
        raise ValueError("no candidates to evaluate")
    shape = (len(groups), max(len(g) for g in groups.values()))
    valid, passed = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    scores = {(s, a): np.full(shape, -np.inf) for s in scorers for a in aggregations}
    difficulty, unscored = [], dict.fromkeys(scorers, 0)
    for i, pid in enumerate(sorted(groups)):
        group = sorted(groups[pid], key=lambda c: c.candidate_id)
        if len({c.candidate_id for c in group}) != len(group):
            raise ValueError(f"problem {pid!r} has duplicate candidate ids")
        difficulty.append(_difficulty(pid, group))
        for j, c in enumerate(group):
            valid[i, j], passed[i, j] = True, c.passed
            for s in scorers:
                agg = _aggregates(c, s)
                unscored[s] += agg is None
                for a in aggregations:
                    scores[s, a][i, j] = UNSCORED if agg is None else agg[a]
    return _Table(tuple(difficulty), valid, passed, scores, unscored)


def select(scores: FloatArray, passed: BoolArray, valid: BoolArray) -> tuple[BoolArray, FloatArray]:
    """Per problem: does the top-scored candidate pass (ties -> first column), and the tie-averaged pass rate."""
    masked = np.where(valid, scores, -np.inf)
    chosen = passed[np.arange(len(passed)), masked.argmax(axis=1)]
    top = valid & (masked == masked.max(axis=1, keepdims=True))
    return chosen, (top & passed).sum(axis=1) / top.sum(axis=1)


def auroc(scores: Sequence[float] | FloatArray, labels: Sequence[bool] | BoolArray) -> float | None:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann–Whitney U on average ranks)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="stable")
    starts = np.flatnonzero(np.r_[True, s[order][1:] != s[order][:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average rank of each tie group
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _per_bin(total: NDArray[Any], count: NDArray[Any]) -> tuple[float | None, ...]:
    return tuple(float(t / n) if n else None for t, n in zip(total, count, strict=True))


def calibration(probs: Sequence[float] | FloatArray, labels: Sequence[bool] | BoolArray,
                bins: int = 10) -> Calibration:
    """Reliability bins, Brier score and expected calibration error of probabilities against outcomes."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if p.size == 0 or p.shape != y.shape:
        raise ValueError("calibration needs as many outcomes as probabilities, at least one")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)  # bin b = [b/bins, (b+1)/bins); 1.0 -> last
    count = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    return Calibration(tuple(edges.tolist()), tuple(count.tolist()), _per_bin(sum_p, count), _per_bin(sum_y, count),
                       float(np.mean((p - y) ** 2)), float(np.abs(sum_p - sum_y).sum() / p.size))


class _Bootstrap:
    """Problem resampling shared by every metric (paired intervals): multinomial counts, one matmul per metric."""

    def __init__(self, n_problems: int, resamples: int, seed: int) -> None:
        if resamples < 1:
            raise ValueError("bootstrap needs at least one resample")
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(n_problems, np.full(n_problems, 1.0 / n_problems), size=resamples) / n_problems

    def estimate(self, per_problem: ArrayLike) -> Estimate:
        values = np.asarray(per_problem, dtype=np.float64)
        low, high = np.percentile(self.weights @ values, [2.5, 97.5])
        return Estimate(float(values.mean()), float(low), float(high))


def _best_of_n(table: _Table, keys: Sequence[Key], repeats: int, rng: np.random.Generator) -> BestOfN:
    n_per = table.valid.sum(axis=1)
    n_max = int(n_per.max())
    ns = tuple(sorted({2**k for k in range(n_max.bit_length()) if 2**k < n_max} | {n_max}))
    stack = np.stack([table.scores[k] for k in keys])  # (S, P, N)
    rows = np.arange(len(n_per))[None, :]
    selected, oracle = np.zeros((len(keys), len(ns)), dtype=np.int64), np.zeros(len(ns), dtype=np.int64)
    for _ in range(repeats):
        # rank of each candidate in a random order; a size-n subset is the first n, so subsets nest over n
        rank = np.where(table.valid, rng.random(table.valid.shape), np.inf).argsort(1).argsort(1)
        for i, n in enumerate(ns):
            inside = rank < np.minimum(n, n_per)[:, None]  # (P, N)
            pick = np.where(inside, stack, -np.inf).argmax(axis=2)  # (S, P), first column on ties
            selected[:, i] += table.passed[rows, pick].sum(axis=1)  # integer counts: the last point is exact
            oracle[i] += (inside & table.passed).any(axis=1).sum()
    rate, total = table.passed.sum(axis=1) / n_per, repeats * len(n_per)
    return BestOfN(ns, repeats, tuple((oracle / total).tolist()), float(rate.mean()),
                   {f"{s}/{a}": tuple((selected[j] / total).tolist()) for j, (s, a) in enumerate(keys)})


def _difficulty_order(label: str) -> tuple[int, str]:
    low = label.lower()
    if low == UNKNOWN_DIFFICULTY:
        return len(DIFFICULTY_ORDER) + 1, low
    return (DIFFICULTY_ORDER.index(low) if low in DIFFICULTY_ORDER else len(DIFFICULTY_ORDER)), low


def _by_difficulty(table: _Table, chosen: Mapping[str, BoolArray]) -> tuple[DifficultyRow, ...]:
    labels = np.asarray(table.difficulty)
    rate = table.passed.sum(axis=1) / table.valid.sum(axis=1)
    rows = []
    for label in sorted(set(table.difficulty), key=_difficulty_order):
        g = labels == label
        rows.append(DifficultyRow(label, int(g.sum()), int(table.valid[g].sum()), float(rate[g].mean()),
                                  float(table.passed[g].any(axis=1).mean()),
                                  {k: float(v[g].mean()) for k, v in chosen.items()}))
    return tuple(rows)


def _compare(key: Key, baselines: Sequence[Baseline], chosen: Mapping[Key, BoolArray],
             boot: _Bootstrap) -> tuple[Comparison, ...]:
    out = []
    for b in baselines:
        other = b.resolve(*key)
        if other == key:
            continue  # a row is not its own baseline
        mine, theirs = chosen[key], chosen[other]
        out.append(Comparison(b.name, f"{other[0]}/{other[1]}", int((mine & ~theirs).sum()),
                              int((~mine & theirs).sum()), boot.estimate(mine.astype(np.float64) - theirs)))
    return tuple(out)


def _score_rows(table: _Table, keys: Sequence[Key], baselines: Sequence[Baseline], boot: _Bootstrap,
                bins: int) -> tuple[tuple[ScorerResult, ...], dict[Key, BoolArray]]:
    chosen: dict[Key, BoolArray] = {}
    partial = []
    for key in keys:
        chosen[key], expected = select(table.scores[key], table.passed, table.valid)
        pooled, labels = table.scores[key][table.valid], table.passed[table.valid]
        partial.append((key, boot.estimate(chosen[key]), boot.estimate(expected), auroc(pooled, labels),
                        calibration(np.maximum(pooled, 0.0), labels, bins)))
    rows = tuple(ScorerResult(k[0], k[1], sel, exp, roc, _compare(k, baselines, chosen, boot), cal)
                 for k, sel, exp, roc, cal in partial)  # comparisons need every row's choices first
    return rows, chosen


def evaluate(candidates: Sequence[EvalCandidate], *, scorers: Sequence[str],
             aggregations: Sequence[Aggregation] = AGGREGATIONS, baselines: Sequence[Baseline | str] = ("last",),
             bootstrap: int = 2000, seed: int = 0, curve_repeats: int = 200, calibration_bins: int = 10,
             metadata: Mapping[str, str] | None = None) -> EvalReport:
    """Best-of-N metrics of every (scorer, aggregation) row; deterministic for a given ``seed``.

    Args:
        baselines: rows to count problems gained/lost against, as ``Baseline``s or ``Baseline.parse`` specs:
            ``"last"`` compares each row with the same scorer's last-step (ORM-like) aggregate, ``"prm_uncorrected"``
            with that scorer at the same aggregation.
        bootstrap: resamples of the problems for the 95 % intervals (shared by all metrics, so deltas are paired).
        curve_repeats: random candidate subsets averaged per point of the best-of-N curve.
        metadata: free-form labels (``policy``, ``split``, the command) carried into the report.
    """
    resolved = [b if isinstance(b, Baseline) else Baseline.parse(b) for b in baselines]
    for b in resolved:
        if (b.scorer and b.scorer not in scorers) or (b.aggregation and b.aggregation not in aggregations):
            raise ValueError(f"baseline {b.name!r} is not among the evaluated scorers/aggregations")
    keys = list(dict.fromkeys((s, a) for s in scorers for a in aggregations))
    if not keys or curve_repeats < 1:
        raise ValueError("evaluate needs at least one scorer, one aggregation and one best-of-N repeat")
    table = _build_table(candidates, scorers, aggregations)
    boot = _Bootstrap(len(table.difficulty), bootstrap, seed)
    rows, chosen = _score_rows(table, keys, resolved, boot, calibration_bins)
    n_per = table.valid.sum(axis=1)
    report = EvalReport(
        dict(metadata or {}), len(n_per), int(n_per.sum()), int(n_per.min()), int(n_per.max()), bootstrap, seed,
        boot.estimate(table.passed.sum(axis=1) / n_per), boot.estimate(table.passed.any(axis=1)), table.unscored, rows,
        _by_difficulty(table, {f"{s}/{a}": v for (s, a), v in chosen.items()}),
        _best_of_n(table, keys, curve_repeats, np.random.default_rng([seed, 1])))
    logger.info("evaluated %d problems, %d candidates, %d rows", report.n_problems, report.n_candidates, len(rows))
    return report
