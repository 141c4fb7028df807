"""The padded batch of step-labelled sequences that ``trainer.fit`` builds and ``trainer.meta_correct`` trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class LabelledBatch:
    """Model inputs plus N labelled positions into the model's (B, T) logits.

    ``inputs`` go to the model as keyword arguments (first dim B); ``positions`` (N, 2) are (row, token)
    pairs; ``labels`` (N,) are targets in [0, 1]; ``sample_ids`` (N,) index the global table of step
    labels, i.e. the entry of β or w that each position learns (unused in meta batches).
    """

    inputs: dict[str, Tensor]
    positions: Tensor
    labels: Tensor
    sample_ids: Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.labels.dim() != 1 or self.positions.shape != (n, 2) or self.sample_ids.shape != (n,):
            raise ValueError("need positions (N, 2), labels (N,) and sample_ids (N,)")

    def to(self, device: torch.device) -> LabelledBatch:
        return LabelledBatch({k: v.to(device) for k, v in self.inputs.items()}, self.positions.to(device),
                             self.labels.to(device), self.sample_ids.to(device))


def select_positions(logits: Tensor, batch: LabelledBatch) -> Tensor:
    """The default ``select``: step logits (N,) at ``batch.positions`` of the (B, T) model output."""
    return logits[batch.positions[:, 0], batch.positions[:, 1]]
