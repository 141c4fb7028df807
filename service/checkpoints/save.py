"""Writing our checkpoint format (DESIGN §4) from a trained network: LoRA merged, ``prm.json`` with the head,
dtype, limits and the probe a reload must reproduce, the weights in full (backbone + tokenizer) or as an
adapter (``service.checkpoints.adapter``), and the model card, written atomically. Used by the trainer's fit
and export stages; imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import torch

from service.aggregate import Aggregation
from service.checkpoints.adapter import adapter_tensors, lora_factors
from service.checkpoints.manifest import AdapterSpec, BaseModelSpec, HeadSpec, PRMManifest, Probe
from service.encoding import STEP_SEPARATOR
from service.model import PRMModel, PRMNetwork

Weights = Literal["full", "adapter"]


# The probe every export scores and records in prm.json (``Probe``): a reload must reproduce these logits.
PROBE_PROBLEM = "Given an integer array nums, return the sum of its even elements."


PROBE_STEPS = ("class Solution:\n",
               "    def sumEven(self, nums: List[int]) -> int:\n        return sum(x for x in nums if x % 2 == 0)\n")


def export_checkpoint(network: PRMNetwork, tokenizer: Any, out: Path, *, name: str, base_model: BaseModelSpec,
                      max_tokens: int, default_aggregation: Aggregation, training: dict[str, Any],
                      metrics: dict[str, Any], card: str, weights: Weights = "full",
                      separator: str = STEP_SEPARATOR) -> PRMModel:
    """Merge adapters, write ``out`` atomically with ``prm.json`` and ``MODEL_CARD.md``.

    ``weights="full"``: the whole merged backbone and tokenizer (self-contained). ``"adapter"``: only the
    LoRA factors, the separator's embedding row and the head (a few MB; the base model is loaded from
    ``base_model``, whose sha256 must be set)."""
    factors = lora_factors(network) if weights == "adapter" else {}
    if weights == "adapter" and (not factors or base_model.sha256 is None):
        raise ValueError("an adapter checkpoint needs LoRA training and a base model with a sha256")
    network = merge_trainable(network).eval()
    hidden = int(network.head.in_features)
    dtype = str(next(network.backbone.parameters()).dtype).removeprefix("torch.")
    adapter_spec, tensors = None, None
    if weights == "adapter":
        first = int(tokenizer.convert_tokens_to_ids(separator))
        if first != len(tokenizer) - 1:
            raise ValueError(f"the separator {separator!r} must be the only token added to the base tokenizer")
        embed = cast(torch.nn.Embedding, network.backbone.get_input_embeddings())
        rows = embed.weight[first:first + 1]
        adapter_spec = AdapterSpec(rank=next(iter(factors.values()))[0].shape[0], modules=sorted(factors),
                                   added_tokens=[separator], first_added_id=first)
        tensors = adapter_tensors(factors, rows)
    manifest = PRMManifest(name=name, base_model=base_model, head=HeadSpec(in_features=hidden), dtype=dtype,
                           default_aggregation=default_aggregation, max_tokens=max_tokens, training=training,
                           metrics=metrics, weights=weights, adapter=adapter_spec)
    model = PRMModel(network, tokenizer, manifest)
    logits = model.forward([model.encode(PROBE_PROBLEM, list(PROBE_STEPS))])[0]
    model.manifest = manifest.model_copy(update={"probe": Probe(problem=PROBE_PROBLEM, steps=list(PROBE_STEPS),
                                                                logits=logits)})
    model.save(out, overwrite=True, extra_files={"MODEL_CARD.md": card}, adapter=tensors)
    return model


def merge_trainable(network: PRMNetwork) -> PRMNetwork:
    """Fold LoRA adapters into the backbone weights (export writes a plain model)."""
    merge = getattr(network.backbone, "merge_and_unload", None)  # a peft-wrapped backbone
    if merge is not None:
        network.backbone = merge()
    return network
