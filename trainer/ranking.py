"""Verifier metrics on groups of candidates (issue 12): does a scorer pick a passing candidate?

A *group* is the set a best-of-N pick chooses from: one problem's candidates, or — within one model — one
problem's candidates written by a single model (pools mix models of different strength, and a scorer can win
the mixed groups by recognising who wrote a candidate rather than whether it is correct). Per scorer:
selected pass@1 (ties averaged: a uniform pick among the top scores), the share of the random→oracle gap it
closes, pooled AUROC and mean within-group AUROC, each with a percentile-bootstrap 95 % interval over groups,
and groups gained / lost against a reference scorer. Pure numpy; scores are plain floats (higher = better).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trainer.metrics import auroc


@dataclass(frozen=True, slots=True)
class Ranked:
    """One graded candidate: its group, outcome and every scorer's score of it."""

    group: str
    candidate_id: str
    passed: bool
    scores: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class ScorerRow:
    scorer: str
    selected: Interval  # pass@1 of the pick, ties averaged
    gap_closed: Interval  # (selected - random) / (oracle - random)
    pooled_auroc: float | None
    within_auroc: Interval  # mean over groups with a passing and a failing candidate
    gained: int  # groups whose pick passes where the reference's fails (ties broken by candidate id)
    lost: int


@dataclass(frozen=True, slots=True)
class RankingReport:
    name: str
    n_groups: int
    n_mixed: int  # groups with at least one passing and one failing candidate
    n_candidates: int
    random: float
    oracle: float
    reference: str
    rows: tuple[ScorerRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, scorer: str) -> ScorerRow:
        return next(r for r in self.rows if r.scorer == scorer)


def _groups(items: Sequence[Ranked]) -> list[list[Ranked]]:
    by: dict[str, list[Ranked]] = {}
    for it in items:
        by.setdefault(it.group, []).append(it)
    return [sorted(g, key=lambda it: it.candidate_id) for _, g in sorted(by.items())]


def _interval(per_group: np.ndarray, weights: np.ndarray) -> Interval:
    if per_group.size == 0:
        return Interval(None, None, None)
    low, high = np.percentile(weights @ per_group, [2.5, 97.5])
    return Interval(float(per_group.mean()), float(low), float(high))


def rank_report(items: Sequence[Ranked], scorers: Sequence[str], *, name: str, reference: str,
                bootstrap: int = 1000, seed: int = 0) -> RankingReport:
    """Metrics of every scorer over the groups of ``items``; ``reference`` is the row gained/lost compare with."""
    groups = _groups(items)
    if not groups:
        raise ValueError(f"{name}: no candidates to rank")
    missing = [s for s in scorers if any(s not in it.scores for it in items)]
    if missing or reference not in scorers:
        raise ValueError(f"{name}: scores missing for {missing or [reference]}")
    rate = np.array([np.mean([it.passed for it in g]) for g in groups])
    oracle = np.array([float(any(it.passed for it in g)) for g in groups])
    mixed = np.array([0 < r < 1 for r in rate])
    rng = np.random.default_rng(seed)
    n = len(groups)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap) / n  # (B, G): one resampling for all rows
    mixed_idx = np.flatnonzero(mixed)
    m = max(len(mixed_idx), 1)
    mixed_weights = rng.multinomial(m, np.full(m, 1.0 / m), size=bootstrap) / m

    picks: dict[str, np.ndarray] = {}
    rows = []
    for scorer in scorers:
        expected, first, within = [], [], []
        for g in groups:
            s = np.array([it.scores[scorer] for it in g])
            y = np.array([it.passed for it in g])
            top = s == s.max()
            expected.append(y[top].mean())
            first.append(y[int(np.argmax(s))])
            if 0 < y.mean() < 1:
                within.append(auroc(s, y))
        sel = np.array(expected)
        picks[scorer] = np.array(first, dtype=bool)
        gap = oracle - rate
        boot_gap = (weights @ (sel - rate)) / np.maximum(weights @ gap, 1e-12)
        total_gap = gap.mean()
        gap_closed = Interval(float((sel - rate).mean() / total_gap) if total_gap > 0 else None,
                              *(map(float, np.percentile(boot_gap, [2.5, 97.5])) if total_gap > 0 else (None, None)))
        pooled = auroc([it.scores[scorer] for g in groups for it in g], [it.passed for g in groups for it in g])
        rows.append((scorer, _interval(sel, weights), gap_closed, pooled,
                     _interval(np.array(within, dtype=float), mixed_weights) if within else Interval(None, None, None)))
    out = tuple(ScorerRow(s, sel, gap, pooled, within, int((picks[s] & ~picks[reference]).sum()),
                          int((~picks[s] & picks[reference]).sum()))
                for s, sel, gap, pooled, within in rows)
    return RankingReport(name, n, int(mixed.sum()), len(items), float(rate.mean()), float(oracle.mean()), reference,
                         out)


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def _ci(i: Interval, pct: bool = True) -> str:
    if i.value is None:
        return "—"
    return f"{_fmt(i.value, pct)} [{_fmt(i.low, pct)}, {_fmt(i.high, pct)}]"


def report_markdown(reports: Sequence[RankingReport], descriptions: Mapping[str, str] | None = None) -> str:
    """One table per report: every scorer side by side with its intervals."""
    lines: list[str] = []
    for r in reports:
        lines += [f"### {r.name}", "",
                  f"{r.n_groups} groups ({r.n_mixed} with both passing and failing candidates), {r.n_candidates} "
                  f"candidates; random pick {100 * r.random:.1f} %, oracle {100 * r.oracle:.1f} %. Intervals: 95 % "
                  f"percentile bootstrap over groups (within-group AUROC: over mixed groups). Gained / lost: groups "
                  f"whose pick passes where `{r.reference}`'s fails, and the reverse.", "",
                  "| scorer | selected pass@1 % | gap closed % | pooled AUROC | within-group AUROC | "
                  f"vs {r.reference}: gained / lost |", "|---|---|---|---|---|---|"]
        for row in r.rows:
            label = f"{row.scorer}" + (f" ({descriptions[row.scorer]})" if descriptions and row.scorer in
                                       descriptions else "")
            lines.append(f"| {label} | {_ci(row.selected)} | {_ci(row.gap_closed)} | {_fmt(row.pooled_auroc, False)}"
                         f" | {_ci(row.within_auroc, False)} | +{row.gained} / -{row.lost} |")
        lines.append("")
    return "\n".join(lines)
