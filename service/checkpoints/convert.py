"""``dreamprm convert``: the DreamPRM-Code authors' pickled checkpoint into safetensors the server loads.

A model module: imports torch. Their training script saves its whole ``RewardScalarModel`` with ``torch.save``
(``lm`` = the peft-wrapped causal LM, ``reward_head`` = ``Linear(hidden, 1)``). We read it with
``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs) and keep what training
changed: the LoRA factors (as a standard peft adapter) and the head. The base weights come from ``--base``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from service.checkpoints.detect import ADAPTER_CONFIG, AUTHORS_FILE
from service.checkpoints.load import AUTHORS_HEAD
from service.checkpoints.lora import ADAPTER_WEIGHTS, PEFT_PREFIX
from service.checkpoints.manifest import atomic_checkpoint_dir
from service.errors import InvalidInput

LM_PREFIX = "lm.base_model.model."  # their peft-wrapped causal LM, inside their RewardScalarModel


def convert_authors(source: Path, out: Path, *, base: str, lora_alpha: float = 16.0,
                    overwrite: bool = False) -> Path:
    """Write ``out``: ``adapter_config.json`` + ``adapter_model.safetensors`` (peft LoRA on ``base``),
    ``reward_head.safetensors`` and ``dreamprm_code.json``. ``lora_alpha`` is not in their file (their
    default is 16). When ``base`` is a local directory, one adapted layer's base weight is compared with it.

    Raises:
        InvalidInput: not a state dict of their model (no LoRA factors or no reward head).
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if out.exists() and not overwrite:
        raise FileExistsError(out)
    state = _state_dict(_checkpoint_file(source))
    head = {k.removeprefix("reward_head."): v for k, v in state.items() if k.startswith("reward_head.")}
    if set(head) != {"weight", "bias"} or head["weight"].shape[0] != 1:
        raise InvalidInput(f"{source}: no reward_head Linear(hidden, 1, bias=True) in the state dict")
    adapter: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    rank = 0
    for key, value in state.items():
        if key.startswith(LM_PREFIX) and (".lora_A." in key or ".lora_B." in key):
            name = key.removeprefix(LM_PREFIX).replace(".default.", ".")
            adapter[PEFT_PREFIX + name] = value.float().contiguous()
            modules.add(name.split(".lora_")[0].rsplit(".", 1)[-1])
            rank = value.shape[0] if ".lora_A." in key else rank
    if not adapter:
        raise InvalidInput(f"{source}: no LoRA factors under {LM_PREFIX}* (is this their RewardScalarModel?)")
    _check_base(state, base)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": lora_alpha,
              "target_modules": sorted(modules), "base_model_name_or_path": base, "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "lora_dropout": 0.0}
    meta = {"format": "dreamprm-code-authors", "base_model": base, "source": source.name,
            "platform": "", "question_id": "", "title": ""}
    with atomic_checkpoint_dir(out) as tmp:
        save_file(adapter, str(tmp / ADAPTER_WEIGHTS))
        save_file({k: v.float().contiguous() for k, v in head.items()}, str(tmp / AUTHORS_HEAD))
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / AUTHORS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _checkpoint_file(source: Path) -> Path:
    if source.is_file():
        return source
    found = sorted(source.glob("*.pt")) + sorted(source.glob("*.pth"))
    if len(found) != 1:
        raise InvalidInput(f"{source}: expected one .pt file, found {[p.name for p in found]}")
    return found[0]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInput(f"{path} cannot be read with torch.load(weights_only=True): {exc}") from exc
    if isinstance(raw, dict) and isinstance(raw.get("module"), dict):  # a DeepSpeed/DDP training state
        raw = raw["module"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InvalidInput(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def _check_base(state: dict[str, torch.Tensor], base: str) -> None:
    """When ``base`` is a local directory: its weight of one adapted layer equals the checkpoint's copy."""
    where = Path(base)
    key = next((k for k in sorted(state) if k.startswith(LM_PREFIX) and k.endswith(".base_layer.weight")), None)
    if key is None or not where.is_dir():
        return
    name = key.removeprefix(LM_PREFIX).replace(".base_layer.", ".")
    for file in sorted(where.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            if name in fh.keys():
                theirs = fh.get_tensor(name).float()
                mine = state[key].float()
                if theirs.shape != mine.shape or not torch.allclose(theirs, mine, rtol=1e-2, atol=1e-3):
                    raise InvalidInput(f"the checkpoint's {name} differs from {base}'s: it was trained on "
                                       "another base model")
                return
