"""Test doubles: a character tokenizer and a deterministic ``ScoreModel`` (no torch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from service.checkpoints.manifest import BaseModelSpec, HeadSpec, PRMManifest
from service.encoding import STEP_SEPARATOR, Encoded, encode_steps

SEP_ID = 1


class CharTokenizer:
    """One token per character (id = code point + 2); ``<|step|>`` is id 1."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text == STEP_SEPARATOR:
            return [SEP_ID]
        return [ord(c) + 2 for c in text]

    def convert_tokens_to_ids(self, tokens: str) -> int | None:
        return SEP_ID if tokens == STEP_SEPARATOR else None


class FakeModel:
    """Deterministic logits from the token prefix; can be made to block or to fail."""

    def __init__(self, *, max_tokens: int = 4096, name: str = "fake-prm") -> None:
        self.name = name
        self.revision = "fake0001"
        self.format = "dreamprm"
        self.template = "dreamprm-cof-v1"
        self.manifest = PRMManifest(name=name, base_model=BaseModelSpec(id="fake"),
                                    head=HeadSpec(in_features=1), max_tokens=max_tokens)
        self.tokenizer = CharTokenizer()
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_with: Exception | None = None

    def encode(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded:
        return encode_steps(self.tokenizer, problem, steps, max_tokens or self.manifest.max_tokens)

    def forward(self, batch: Sequence[Encoded]) -> list[list[float]]:
        self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(len(batch))
        return [[logit_at(e.input_ids, p) for p in e.step_end_positions] for e in batch]

    def warm_up(self) -> None:
        self.forward([self.encode("warm", ["x"])])


def logit_at(ids: Sequence[int], position: int) -> float:
    return ((sum(ids[: position + 1]) * 7919) % 2001 - 1000) / 250.0
