"""Aggregation of step scores into one candidate score. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Aggregation = Literal["min", "mean", "last", "product", "logodds"]
AGGREGATIONS: tuple[Aggregation, ...] = ("min", "mean", "last", "product", "logodds")


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def aggregate(logits: Sequence[float]) -> dict[Aggregation, float]:
    """All aggregates of the step logits, each a probability in [0, 1].

    ``min``/``mean``/``last``/``product`` act on the step probabilities; ``logodds`` is the
    sigmoid of the mean step logit (a geometric-style average that does not punish long
    solutions the way ``product`` does).
    """
    if not logits:
        raise ValueError("no step scores to aggregate")
    probs = [sigmoid(x) for x in logits]
    log_product = sum(-math.log1p(math.exp(-x)) if x > -30 else x for x in logits)
    return {
        "min": min(probs),
        "mean": sum(probs) / len(probs),
        "last": probs[-1],
        "product": math.exp(log_product),
        "logodds": sigmoid(sum(logits) / len(logits)),
    }
