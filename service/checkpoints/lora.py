"""A peft LoRA adapter directory merged into its base model, natively (no peft at serving time).

A model module: imports torch and safetensors. Reads ``adapter_config.json`` + ``adapter_model.safetensors``;
``W += (lora_alpha / r) · B @ A`` (``/ sqrt(r)`` with rsLoRA) for every adapted Linear layer, and the
``modules_to_save`` tensors (a classification head) copied in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from service.errors import InvalidInput

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def merge_lora(model: torch.nn.Module, adapter_dir: Path, config: dict[str, Any]) -> set[str]:
    """Merge the adapter in ``adapter_dir`` into ``model`` (the model the adapter was trained on, in fp32);
    returns the names of the parameters replaced whole (``modules_to_save``).

    Raises:
        InvalidInput: no safetensors weights, an adapter kind we do not merge (DoRA, embedding LoRA,
            fan-in-fan-out, alpha patterns), or tensors that do not fit the base model.
    """
    if config.get("use_dora") or config.get("fan_in_fan_out") or config.get("alpha_pattern"):
        raise InvalidInput(f"{adapter_dir}: DoRA, fan_in_fan_out and alpha_pattern adapters are not merged")
    try:
        tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise InvalidInput(f"{adapter_dir / ADAPTER_WEIGHTS} cannot be read (adapters are loaded from "
                           f"safetensors only): {exc}") from exc
    alpha = float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora"))
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    replaced: set[str] = set()
    with torch.no_grad():
        for key, tensor in tensors.items():
            name = key.removeprefix(PEFT_PREFIX)
            if ".lora_B" in name:
                continue  # merged with its lora_A
            if ".lora_A" in name:
                _merge_layer(modules, name.split(".lora_A")[0], tensor, tensors, key, alpha, rslora)
                continue
            if "lora_embedding" in name or "trainable_tokens" in name:
                raise InvalidInput(f"{adapter_dir}: {key} (embedding adapters) is not merged")
            target = name.replace(".modules_to_save", "").replace(".default", "")
            param = params.get(target)
            if param is None or param.shape != tensor.shape:
                raise InvalidInput(f"{adapter_dir}: {key} does not fit the base model")
            param.copy_(tensor.to(param.dtype))
            replaced.add(target)
    return replaced


def _merge_layer(modules: dict[str, torch.nn.Module], name: str, a: torch.Tensor, tensors: dict[str, torch.Tensor],
                 key: str, alpha: float, rslora: bool) -> None:
    layer = modules.get(name)
    b = tensors.get(key.replace(".lora_A", ".lora_B"))
    if not isinstance(layer, torch.nn.Linear) or b is None:
        raise InvalidInput(f"adapter tensor {key}: no Linear layer {name!r} in the base model, or no lora_B")
    rank = a.shape[0]
    if a.shape != (rank, layer.in_features) or b.shape != (layer.out_features, rank):
        raise InvalidInput(f"adapter tensors of {name!r} do not fit the layer")
    scale = alpha / (math.sqrt(rank) if rslora else rank)
    layer.weight += (scale * (b.float() @ a.float())).to(layer.weight.dtype)  # (out, in)
