"""Scorers of the foreign checkpoint formats, on ``PRMModel``'s forward passes (shape buckets, passes of at
most ``pass_tokens``, the problem's KV cache shared by the rows that start with it).

A model module: imports torch. Only the input template and the head differ from our own format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from service.checkpoints.identity import Encoder
from service.checkpoints.manifest import PRMManifest
from service.checkpoints.templates import RowsEncoded
from service.encoding import Encoded
from service.model import PRMModel, PRMNetwork


class LogitHead(torch.nn.Module):
    """A classification head as one logit per position: with 2 labels, label 1's log-odds against label 0
    (so ``sigmoid(logit)`` is ``softmax(logits)[1]``); with 1 label, the label itself."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = cast(torch.Tensor, self.head(hidden))  # (..., n_labels)
        if out.shape[-1] == 2:
            return (out[..., 1] - out[..., 0]).unsqueeze(-1)  # (..., 1)
        return out


class ForeignPRM(PRMModel):
    """A scorer whose steps are read in one pass at positions its template marks (TRL token classification,
    Qwen2.5-Math-PRM): ``PRMModel`` with another encoder, head and identity."""

    def __init__(self, network: PRMNetwork, tokenizer: Any, manifest: PRMManifest, *, fmt: str, template: str,
                 encoder: Encoder, revision: str, pad_id: int) -> None:
        super().__init__(network, tokenizer, manifest, revision=revision, pad_id=pad_id)
        self.format = fmt
        self.template = template
        self._encoder = encoder

    def encode(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded:
        return self._encoder(problem, steps, min(max_tokens or self.max_tokens, self.max_tokens))


class RowsPRM(ForeignPRM):
    """A scorer that reads one score at the last token of a sequence: the authors' PRM (one sequence per code
    prefix) and outcome reward models (the whole program; one sequence per prefix when asked). The rows of a
    batch go through ``PRMModel.forward`` together, so rows that start with the same problem share its KV cache.

    ``prefix_encoder``: an ORM's per-prefix encoder (``"prefix_scores": true``); None when ``encode`` already
    scores every prefix."""

    def __init__(self, *args: Any, prefix_encoder: Encoder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefix_encoder = prefix_encoder
        self.outcome = prefix_encoder is not None

    def encode_prefixes(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded:
        """Every prefix of the program as its own sequence (for an ORM; a PRM's ``encode`` already does it)."""
        if self._prefix_encoder is None:
            return self.encode(problem, steps, max_tokens)
        return self._prefix_encoder(problem, steps, min(max_tokens or self.max_tokens, self.max_tokens))

    def forward(self, batch: Sequence[Encoded]) -> list[list[float]]:
        items = [cast(RowsEncoded, item) for item in batch]
        logits = super().forward([row for item in items for row in item.rows])
        out: list[list[float]] = []
        start = 0
        for item in items:
            out.append([row_logits[0] for row_logits in logits[start:start + len(item.rows)]])
            start += len(item.rows)
        return out
