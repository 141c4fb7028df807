"""Verifier metrics over groups (trainer.ranking) on hand-built groups with known answers."""

from __future__ import annotations

import pytest

from trainer.ranking import Ranked, rank_report, report_markdown


def _items() -> list[Ranked]:
    # three groups: p1 mixed (a passes), p2 mixed (d passes), p3 all fail
    rows = [("p1", "a", True, 0.9), ("p1", "b", False, 0.1), ("p1", "c", False, 0.2),
            ("p2", "d", True, 0.8), ("p2", "e", False, 0.3),
            ("p3", "f", False, 0.5), ("p3", "g", False, 0.4)]
    return [Ranked(g, c, y, {"good": s, "bad": -s, "flat": 0.0, "oracle": float(y)}) for g, c, y, s in rows]


def test_perfect_flat_and_reversed_scorers() -> None:
    report = rank_report(_items(), ["good", "bad", "flat", "oracle"], name="t", reference="flat", bootstrap=200)
    assert report.n_groups == 3 and report.n_mixed == 2 and report.n_candidates == 7
    assert report.random == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert report.oracle == pytest.approx(2 / 3)
    good, bad, flat = report.row("good"), report.row("bad"), report.row("flat")
    assert good.selected.value == pytest.approx(2 / 3) and good.gap_closed.value == pytest.approx(1.0)
    assert good.within_auroc.value == pytest.approx(1.0) and good.pooled_auroc == pytest.approx(1.0)
    assert flat.selected.value == pytest.approx(report.random) and flat.gap_closed.value == pytest.approx(0.0)
    assert flat.within_auroc.value == pytest.approx(0.5)
    assert bad.selected.value == pytest.approx(0.0) and bad.gap_closed.value is not None
    assert bad.gap_closed.value < 0 and bad.within_auroc.value == pytest.approx(0.0)
    # gained / lost against the flat reference (ties -> the smallest candidate id: a, d, f)
    assert (good.gained, good.lost) == (0, 0) and (bad.gained, bad.lost) == (0, 2)
    low, high = good.selected.low, good.selected.high
    assert low is not None and high is not None and low <= 2 / 3 <= high
    assert "| good |" in report_markdown([report])


def test_missing_scores_are_an_error() -> None:
    with pytest.raises(ValueError, match="missing"):
        rank_report(_items(), ["good", "nope"], name="t", reference="good")
    with pytest.raises(ValueError, match="no candidates"):
        rank_report([], ["good"], name="t", reference="good")
