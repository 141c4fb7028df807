"""Aggregation of step scores into one candidate score. Pure Python.

What a step is for scoring (issue 12, point 4): every step gets its score, but module-level *context* — a
preamble or epilogue without logic of its own (imports, ``class Solution:``, a ``main()`` call; the rule is
``service.steps.python.carries_logic``) — never decides the aggregate when the program has another step that
was scored. With ``min``, the ``class Solution:`` preamble's score used to be the score of every LeetCode
candidate. Module-level code that computes (a stdin program reading input and looping over it) is a step
like a function: on the dev part of the real pools, leaving it out too lost half of the gap closed on APPS.
"""

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


def aggregated_logits(logits: Sequence[float], context: Sequence[bool] | None = None) -> list[float]:
    """The step logits that enter the aggregates: those of non-context steps when any was scored, else all.

    ``context`` is aligned with the steps (``service.steps.Step.context``); it may be longer than ``logits``
    (steps past the token budget have no score). Without it (steps given as texts) every step counts.
    """
    if context is None:
        return list(logits)
    reasoning = [x for x, ctx in zip(logits, context, strict=False) if not ctx]
    return reasoning or list(logits)


def aggregate(logits: Sequence[float], context: Sequence[bool] | None = None) -> dict[Aggregation, float]:
    """All aggregates of the step logits, each a probability in [0, 1].

    ``min``/``mean``/``last``/``product`` act on the step probabilities; ``logodds`` is the
    sigmoid of the mean step logit (a geometric-style average that does not punish long
    solutions the way ``product`` does). With ``context``, context steps are left out (``aggregated_logits``).
    """
    chosen = aggregated_logits(logits, context)
    if not chosen:
        raise ValueError("no step scores to aggregate")
    probs = [sigmoid(x) for x in chosen]
    log_product = sum(-math.log1p(math.exp(-x)) if x > -30 else x for x in chosen)
    return {
        "min": min(probs),
        "mean": sum(probs) / len(probs),
        "last": probs[-1],
        "product": math.exp(log_product),
        "logodds": sigmoid(sum(chosen) / len(chosen)),
    }
