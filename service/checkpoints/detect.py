"""Which checkpoint format a directory holds (README "Checkpoint formats"), decided from its small JSON files.

Pure: stdlib, pydantic and ``service`` only; nothing here reads weights, so ``dreamprm serve`` can refuse a
directory before binding its port. ``service.checkpoints.load`` builds the scorer for the format found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service.checkpoints.manifest import MANIFEST
from service.errors import InvalidInput

Format = Literal["dreamprm", "token-classification", "qwen2.5-math-prm", "dreamprm-code-authors", "orm"]

# One line per accepted format, in the order they are tried; the refusal of an unknown directory lists them.
FORMATS: dict[Format, str] = {
    "dreamprm": f"this project's checkpoint ({MANIFEST}; full or adapter)",
    "token-classification": "a TRL PRMTrainer output: config.json with a *ForTokenClassification architecture "
                            "and 2 labels (or a peft LoRA adapter directory on such a base)",
    "qwen2.5-math-prm": "a Qwen2.5-Math-PRM-style model: config.json with architectures "
                        "[\"Qwen2ForProcessRewardModel\"]",
    "dreamprm-code-authors": "the DreamPRM-Code authors' checkpoint after `dreamprm convert SRC OUT` "
                             "(dreamprm_code.json + peft LoRA adapter + reward_head.safetensors)",
    "orm": "an outcome reward model: config.json with a *ForSequenceClassification architecture and 1 label",
}
AUTHORS_FILE = "dreamprm_code.json"  # written by `dreamprm convert`
SIDECAR = "prm_template.json"  # optional, beside config.json: how to build the input (step separator, template)
ADAPTER_CONFIG = "adapter_config.json"
CONFIG = "config.json"
QWEN_PRM = "Qwen2ForProcessRewardModel"


@dataclass(frozen=True, slots=True)
class Detected:
    """A checkpoint directory and what it is. ``config`` is the model's ``config.json`` (the base's, for a
    peft adapter), ``adapter`` the adapter's ``adapter_config.json``, ``base`` where the base weights are."""

    format: Format
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, Any] | None = None
    base: Path | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)


def accepted_formats() -> str:
    return "; ".join(f"{name}: {text}" for name, text in FORMATS.items())


def detect_format(path: Path, *, base: Path | None = None) -> Detected:
    """The format of checkpoint directory ``path`` (``base``: the base weights of an adapter, when given).

    Raises:
        InvalidInput: not a directory, or one of no format we accept (the message names those we do).
    """
    if not path.is_dir():
        raise InvalidInput(f"checkpoint {path} is not a directory")
    if (path / MANIFEST).is_file():
        return Detected("dreamprm", path)
    sidecar = read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
    if (path / AUTHORS_FILE).is_file():
        meta = read_json(path / AUTHORS_FILE)
        adapter = read_json(path / ADAPTER_CONFIG) if (path / ADAPTER_CONFIG).is_file() else None
        if adapter is None:
            raise InvalidInput(f"{path} has {AUTHORS_FILE} but no {ADAPTER_CONFIG}: convert it again")
        where = _base_dir(path, adapter, base, meta.get("base_model"))
        return Detected("dreamprm-code-authors", path, read_json(where / CONFIG), adapter, where, {**meta, **sidecar})
    if (path / CONFIG).is_file():
        config = read_json(path / CONFIG)
        return Detected(_model_format(path, config), path, config, None, None, sidecar)
    if (path / ADAPTER_CONFIG).is_file():  # a peft adapter on a token-classification base
        adapter = read_json(path / ADAPTER_CONFIG)
        where = _base_dir(path, adapter, base, None)
        config = read_json(where / CONFIG)
        archs = [str(a) for a in config.get("architectures") or []]
        saved = [str(m) for m in adapter.get("modules_to_save") or []]
        if not (adapter.get("task_type") == "TOKEN_CLS" or any(a.endswith("ForTokenClassification") for a in archs)
                or {"score", "classifier"} & set(saved)):
            raise InvalidInput(f"{path} is a peft adapter on {where} ({archs}) without a token-classification "
                               "head: adapters are accepted for TRL PRMTrainer models (task_type TOKEN_CLS, or "
                               "modules_to_save with the 'score' head)")
        return Detected("token-classification", path, config, adapter, where, sidecar)
    if list(path.glob("*.pt")) or list(path.glob("*.bin")) or list(path.glob("*.pth")):
        raise InvalidInput(f"{path} holds pickled torch files, which the server never loads; for the DreamPRM-Code "
                           f"authors' checkpoint run `dreamprm convert SRC OUT` first. Accepted formats: "
                           f"{accepted_formats()}")
    raise InvalidInput(f"{path} is not a checkpoint of a format we accept ({accepted_formats()})")


def _model_format(path: Path, config: dict[str, Any]) -> Format:
    archs = [str(a) for a in config.get("architectures") or []]
    labels = num_labels(config)
    if QWEN_PRM in archs:
        return "qwen2.5-math-prm"
    if any(a.endswith("ForTokenClassification") for a in archs):
        if labels not in (1, 2):
            raise InvalidInput(f"{path} is a token classifier with {labels} labels; a PRM has 2 "
                               "(softmax, P(correct) = label 1) or 1 (sigmoid)")
        return "token-classification"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        if labels != 1:
            raise InvalidInput(f"{path} is a sequence classifier with {labels} labels; an outcome reward "
                               "model has 1 (a scalar reward)")
        return "orm"
    raise InvalidInput(f"{path} is a {archs or 'model without architectures'} model, not a format we accept "
                       f"({accepted_formats()})")


def num_labels(config: dict[str, Any]) -> int:
    if "num_labels" in config:
        return int(config["num_labels"])
    return len(config.get("id2label") or {0: "LABEL_0", 1: "LABEL_1"})  # transformers' default: 2


def _base_dir(path: Path, adapter: dict[str, Any], base: Path | None, recorded: str | None) -> Path:
    """The base weights of an adapter: ``base``, else the local directory the adapter (or converter) names."""
    if adapter.get("peft_type", "LORA") != "LORA" or adapter.get("use_dora"):
        raise InvalidInput(f"{path}: only plain LoRA adapters are accepted (peft_type LORA, no DoRA)")
    candidates = [base] if base is not None else [Path(p) for p in (recorded, adapter.get("base_model_name_or_path"))
                                                  if p]
    for where in candidates:
        if where is not None and (where / CONFIG).is_file():
            return where
    named = recorded or adapter.get("base_model_name_or_path") or "?"
    raise InvalidInput(f"{path} is an adapter on {named!r}: give its base model as a local Hugging Face "
                       "directory (DREAMPRM_BASE_MODEL)")


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{path} is not a JSON object")
    return value
