"""Stage ``export``: the checkpoint directory of DESIGN §4 (+ model card), and TRL PRM rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from service.aggregate import Aggregation
from service.checkpoints.manifest import (
    ADAPTER_FILE,
    HEAD_FILE,
    AdapterSpec,
    BaseModelSpec,
    HeadSpec,
    PRMManifest,
    Probe,
    atomic_checkpoint_dir,
    write_manifest,
)
from service.encoding import STEP_SEPARATOR
from service.model import PRMModel, PRMNetwork, adapter_tensors
from trainer.fit import merge_trainable
from trainer.records import Candidate, Problem, StepLabel, TRLRow

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
        rows = network.backbone.get_input_embeddings().weight[first:first + 1]
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


def copy_adapter_checkpoint(source: Path, out: Path, manifest: PRMManifest, *, card: str,
                            files: Sequence[Path] = ()) -> None:
    """``source``'s adapter and head, unchanged, with a new ``prm.json``, card and ``files`` (the card's
    figures), written atomically."""
    with atomic_checkpoint_dir(out) as tmp:
        for name in (ADAPTER_FILE, HEAD_FILE):
            shutil.copyfile(source / name, tmp / name)
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        write_manifest(tmp, manifest)
        (tmp / "MODEL_CARD.md").write_text(card)


def lora_factors(network: PRMNetwork) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, scaling · B) of every LoRA layer of a peft-wrapped backbone, by the base model's module name."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, module in network.backbone.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and isinstance(lora_b, torch.nn.ModuleDict) and "default" in lora_a:
            scale = float(module.scaling["default"])
            out[name.removeprefix("base_model.model.")] = (
                lora_a["default"].weight.detach().float().clone(),
                (lora_b["default"].weight.detach().float() * scale).clone())
    return out


def trl_rows(problems: Mapping[str, Problem], candidates: Iterable[Candidate],
             labels: Mapping[tuple[str, str, int], StepLabel], *, threshold: float = 0.5) -> Iterable[TRLRow]:
    """TRL's stepwise-supervision rows: prompt, the step texts, one boolean label per step (its MC label
    ``>= threshold``; TRL's ``PRMTrainer`` takes ``int(label)``), and the MC labels in ``soft_labels``."""
    for cand in candidates:
        keys = [(cand.problem_id, cand.candidate_id, s.index) for s in cand.steps]
        if cand.steps and all(k in labels for k in keys):
            soft = [labels[k].mc_label for k in keys]
            yield TRLRow(prompt=problems[cand.problem_id].prompt, completions=[s.text for s in cand.steps],
                         labels=[p >= threshold for p in soft], soft_labels=soft)


def write_trl(path: Path, rows: Iterable[TRLRow]) -> int:
    n = 0
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row.model_dump()) + "\n")
            n += 1
    return n


def model_card(*, name: str, base_model: BaseModelSpec, training: dict[str, Any], evaluation_md: str | None,
               recipe_md: str | None = None) -> str:
    """The model card, built from the run's records (nothing typed by hand)."""
    lines = [f"# {name}", "", "A DreamPRM-Code process reward model: a value head on "
             f"`{base_model.id}` scoring each function step of a program.", "",
             "## Training", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in sorted(training.items())]
    if recipe_md:
        lines += ["", "## Recipe: stage times on the machine that ran it", "", recipe_md]
    lines += ["", "## Evaluation", "", evaluation_md or "_No evaluation was run for this checkpoint._", ""]
    return "\n".join(lines)
