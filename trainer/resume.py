"""Resumable training loops (issue 12): the trainable state of a loop, saved atomically every few minutes.

A killed ``fit`` (``kill -9`` included) restarts from its last save: the trainable tensors, the optimizer, the
position in the data order and the RNG, so the resumed run continues exactly where the saved one was. Only
``torch.load(weights_only=True)`` reads the file back (no pickle of code).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``directory/resume.pt`` atomically (a kill mid-write leaves the previous save)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{RESUME_FILE}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, directory / RESUME_FILE)


def load_state(directory: Path | None) -> dict[str, Any] | None:
    path = None if directory is None else directory / RESUME_FILE
    if path is None or not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    logger.info("resuming from %s (step %s)", path, state.get("step"))
    return state


def restore_trainable(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    if set(tensors) != {n for n, p in params.items() if p.requires_grad}:
        raise ValueError("the saved training state does not match this model's trainable parameters; "
                         "delete resume.pt to start over")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def clear_state(directory: Path | None) -> None:
    if directory is not None:
        (directory / RESUME_FILE).unlink(missing_ok=True)


class Every:
    """True once every ``seconds`` (0: every call)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False
