"""The adapter checkpoint format (DESIGN §4, ``weights: adapter``): LoRA factors ``{module}.A`` (r, in) and
``{module}.B`` (out, r, pre-scaled) plus the added tokens' embedding rows ``embed.added`` in ``adapter.safetensors``
beside the value head. Every read and write of it is here: a base model with the adapter merged for serving
(``adapter_backbone``), a warm start of a peft-wrapped network (``load_added_rows_and_head``, ``load_lora``), the
factors of a trained network (``lora_factors``, ``adapter_tensors``) and a copy with a new manifest
(``copy_adapter_checkpoint``). Imports torch, safetensors and transformers."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from service.checkpoints.backbone import load_causal_lm, resolve_base
from service.checkpoints.manifest import (
    ADAPTER_FILE,
    HEAD_FILE,
    PRMManifest,
    atomic_checkpoint_dir,
    read_manifest,
    write_manifest,
)
from service.errors import InvalidInput

if TYPE_CHECKING:
    from service.model import PRMModel, PRMNetwork


def adapter_tensors(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                    added_rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The adapter file's tensors: ``{module}.A`` (r, in), ``{module}.B`` (out, r, pre-scaled), and
    ``embed.added`` (n_added, hidden)."""
    out = {f"{name}.{k}": t for name, (a, b) in factors.items() for k, t in (("A", a), ("B", b))}
    out["embed.added"] = added_rows
    return out


def adapter_backbone(checkpoint: Path, manifest: PRMManifest, base: Path | None, *,
                     trust_remote_code: bool) -> tuple[PreTrainedModel, Any]:
    """The base model (fp32) with the adapter applied: low-rank updates merged, tokens added."""
    adapter = manifest.adapter
    assert adapter is not None  # the manifest validator requires it
    source = resolve_base(manifest, base, where=checkpoint)
    try:
        tensors = load_file(str(checkpoint / ADAPTER_FILE))
    except (OSError, SafetensorError) as exc:
        raise InvalidInput(f"{checkpoint / ADAPTER_FILE} cannot be read: {exc}") from exc
    lm, tokenizer = load_causal_lm(source, dtype=torch.float32, trust_remote_code=trust_remote_code)
    backbone = cast(PreTrainedModel, getattr(lm, "base_model", lm))
    if len(tokenizer) != adapter.first_added_id:
        raise InvalidInput(f"base tokenizer has {len(tokenizer)} tokens, the adapter expects "
                           f"{adapter.first_added_id}")
    tokenizer.add_tokens(adapter.added_tokens, special_tokens=True)
    if tokenizer.convert_tokens_to_ids(adapter.added_tokens) != list(
            range(adapter.first_added_id, adapter.first_added_id + len(adapter.added_tokens))):
        raise InvalidInput("the adapter's added tokens did not get the ids it was trained with")
    if vocab_rows(backbone) < len(tokenizer):  # as PRMModel.create does: grow only
        backbone.resize_token_embeddings(len(tokenizer))
    expected = {f"{m}.{k}" for m in adapter.modules for k in ("A", "B")} | {"embed.added"}
    if set(tensors) != expected:
        raise InvalidInput(f"{ADAPTER_FILE} holds {sorted(set(tensors) ^ expected)[:4]} unlike prm.json's adapter")
    modules = dict(backbone.named_modules())
    with torch.no_grad():
        rows = tensors["embed.added"]
        embed = cast(torch.nn.Embedding, backbone.get_input_embeddings()).weight
        if rows.shape != (len(adapter.added_tokens), embed.shape[1]):
            raise InvalidInput(f"adapter embedding rows have shape {tuple(rows.shape)}")
        embed[adapter.first_added_id:adapter.first_added_id + len(adapter.added_tokens)] = rows
        for name in adapter.modules:
            layer = modules.get(name)
            if not isinstance(layer, torch.nn.Linear):
                raise InvalidInput(f"adapter module {name!r} is not a Linear layer of the base model")
            a, b = tensors[f"{name}.A"], tensors[f"{name}.B"]
            if a.shape != (adapter.rank, layer.in_features) or b.shape != (layer.out_features, adapter.rank):
                raise InvalidInput(f"adapter tensors of {name!r} do not fit the layer")
            layer.weight += b @ a
    return backbone, tokenizer


def vocab_rows(model: PreTrainedModel) -> int:
    return int(cast(torch.nn.Embedding, model.get_input_embeddings()).weight.shape[0])


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
            a = cast(torch.Tensor, lora_a["default"].weight)
            b = cast(torch.Tensor, lora_b["default"].weight)
            out[name.removeprefix("base_model.model.")] = (a.detach().float().clone(),
                                                           (b.detach().float() * scale).clone())
    return out


def load_added_rows_and_head(model: PRMModel, checkpoint: Path) -> None:
    """Warm start, before peft wraps the backbone: the checkpoint's added embedding rows and value head."""
    manifest = read_manifest(checkpoint)
    if manifest.weights != "adapter" or manifest.adapter is None:
        raise ValueError(f"warm start needs an adapter checkpoint; {checkpoint} has {manifest.weights} weights")
    if manifest.base_model.sha256 != model.manifest.base_model.sha256:
        raise ValueError(f"{checkpoint} was trained on another base model")
    rows = load_file(str(checkpoint / ADAPTER_FILE))["embed.added"]
    first = manifest.adapter.first_added_id
    with torch.no_grad():
        embed = cast(torch.nn.Embedding, model.network.backbone.get_input_embeddings())
        embed.weight[first:first + rows.shape[0]] = rows
        model.network.head.load_state_dict(load_file(str(checkpoint / HEAD_FILE)))


def load_lora(network: PRMNetwork, checkpoint: Path) -> None:
    """Warm start, after peft wrapped the backbone: the checkpoint's LoRA factors (same rank and modules)."""
    tensors = load_file(str(checkpoint / ADAPTER_FILE))
    loaded = 0
    with torch.no_grad():
        for name, module in network.backbone.named_modules():
            key = name.removeprefix("base_model.model.")
            if f"{key}.A" in tensors and hasattr(module, "lora_A"):
                a, b = tensors[f"{key}.A"], tensors[f"{key}.B"]
                if a.shape != module.lora_A["default"].weight.shape:
                    raise ValueError(f"{checkpoint}: LoRA rank or shape of {key} differs from fit.lora_r")
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b / float(module.scaling["default"]))
                loaded += 1
    if loaded * 2 != sum(1 for k in tensors if k.endswith((".A", ".B"))):
        raise ValueError(f"{checkpoint}: its LoRA modules differ from fit.target_modules")
