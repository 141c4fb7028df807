"""Aggregation of step scores into one candidate score. Pure Python.

What a step is for scoring: every step gets its score, but module-level context — the ``preamble``
(imports, ``class Solution:``) and the ``epilogue`` (a ``main()`` call) — is not a reasoning step and never
decides the aggregate when the program has at least one function step that was scored (issue 12: with
``min``, the ``class Solution:`` preamble's score used to be the score of every LeetCode candidate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Aggregation = Literal["min", "mean", "last", "product", "logodds"]
AGGREGATIONS: tuple[Aggregation, ...] = ("min", "mean", "last", "product", "logodds")
CONTEXT_KINDS = frozenset({"preamble", "epilogue"})


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def aggregated_logits(logits: Sequence[float], kinds: Sequence[str] | None = None) -> list[float]:
    """The step logits that enter the aggregates: those of function/method steps when any was scored, else all.

    ``kinds`` is aligned with the steps (``service.steps.Step.kind``); it may be longer than ``logits`` (steps
    past the token budget have no score). Without ``kinds`` (steps given as texts) every step counts.
    """
    if kinds is None:
        return list(logits)
    reasoning = [x for x, kind in zip(logits, kinds, strict=False) if kind not in CONTEXT_KINDS]
    return reasoning or list(logits)


def aggregate(logits: Sequence[float], kinds: Sequence[str] | None = None) -> dict[Aggregation, float]:
    """All aggregates of the step logits, each a probability in [0, 1].

    ``min``/``mean``/``last``/``product`` act on the step probabilities; ``logodds`` is the
    sigmoid of the mean step logit (a geometric-style average that does not punish long
    solutions the way ``product`` does). With ``kinds``, context steps are left out (``aggregated_logits``).
    """
    chosen = aggregated_logits(logits, kinds)
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
