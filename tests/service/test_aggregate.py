from __future__ import annotations

import math

import pytest

from service.aggregate import aggregate, sigmoid


def test_aggregates() -> None:
    logits = [2.0, -1.0, 0.5]
    probs = [sigmoid(x) for x in logits]
    agg = aggregate(logits)
    assert agg["min"] == pytest.approx(min(probs))
    assert agg["mean"] == pytest.approx(sum(probs) / 3)
    assert agg["last"] == pytest.approx(probs[-1])
    assert agg["product"] == pytest.approx(math.prod(probs))
    assert agg["logodds"] == pytest.approx(sigmoid(0.5))


def test_extreme_logits_stay_finite() -> None:
    agg = aggregate([-1000.0, 1000.0])
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in agg.values())
    assert sigmoid(-1000) == 0.0 and sigmoid(1000) == 1.0


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        aggregate([])


def test_context_steps_never_decide_the_aggregate() -> None:
    # `class Solution:` preamble scored low, the method high: the method decides (issue 12)
    agg = aggregate([-3.0, 2.0, -4.0], [True, False, True])
    assert agg["min"] == pytest.approx(sigmoid(2.0))
    assert agg["last"] == pytest.approx(sigmoid(2.0))
    assert agg["logodds"] == pytest.approx(sigmoid(2.0))


def test_context_only_programs_and_truncation() -> None:
    # no function step: the context steps are all there is
    assert aggregate([-1.0, 1.0], [True, True])["min"] == pytest.approx(sigmoid(-1.0))
    # the function step past the token budget has no score: fall back to what was scored
    assert aggregate([0.5], [True, False])["min"] == pytest.approx(sigmoid(0.5))
    # flags longer than logits: only the scored prefix counts
    assert aggregate([0.5, -2.0], [True, False, False])["min"] == pytest.approx(sigmoid(-2.0))
