"""One entry point for every checkpoint format: ``load_scorer(dir)`` detects the format and returns the scorer
the engine uses (README "Checkpoint formats"). Like TGI's ``get_model``: one factory, one room per format.

A model module: imports torch and transformers. Never unpickles and never runs a checkpoint's own code
(``trust_remote_code`` stays as the operator set it, off by default; Qwen2.5-Math-PRM is built natively).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from service.checkpoints import templates as tpl
from service.checkpoints.backbone import cast_parameters
from service.checkpoints.detect import Detected, detect_format
from service.checkpoints.identity import foreign_manifest, revision, token_classification_template
from service.checkpoints.lora import merge_lora
from service.checkpoints.scorers import ForeignPRM, LogitHead, RowsPRM
from service.errors import InvalidInput
from service.model import CPU_PASS_TOKENS, Device, DType, PRMModel, PRMNetwork, pick_device, pick_dtype

logger = logging.getLogger(__name__)

AUTHORS_HEAD = "reward_head.safetensors"
ORM_SEPARATOR = "\n\n"  # between the problem and the code, for an ORM whose tokenizer has no chat template


@dataclass(frozen=True, slots=True)
class _Options:
    device: torch.device
    dtype: torch.dtype
    trust_remote_code: bool
    step_separator: str | None


def load_scorer(checkpoint: Path, *, device: Device = "auto", dtype: DType = "auto", threads: int | None = None,
                trust_remote_code: bool = False, base: Path | None = None,
                step_separator: str | None = None) -> PRMModel:
    """The scorer of checkpoint directory ``checkpoint``, whatever its format.

    Args:
        base: base weights of an adapter checkpoint (ours: ``.gguf`` or HF directory; peft: HF directory).
        step_separator: TRL token-classification checkpoints: the separator after each step (default: the
            checkpoint's ``prm_template.json``, else ``"\\n"``, TRL's default).

    Raises:
        InvalidInput: a format we do not accept (the message names those we do), or a malformed checkpoint.
    """
    found = detect_format(checkpoint, base=base)
    if found.format == "dreamprm":
        return PRMModel.load(checkpoint, device=device, dtype=dtype, threads=threads,
                             trust_remote_code=trust_remote_code, base=base)
    if threads:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    dev = pick_device(device)
    opts = _Options(dev, pick_dtype(dtype, dev), trust_remote_code, step_separator)
    loader = {"token-classification": _token_classification, "qwen2.5-math-prm": _qwen_prm,
              "dreamprm-code-authors": _authors, "orm": _orm}[found.format]
    model = loader(found, opts)
    model.network.to(dev).eval()
    model.pass_tokens = CPU_PASS_TOKENS if dev.type == "cpu" else None
    logger.info("loaded %s (%s, %s) on %s as %s", model.name, found.format, model.revision, dev, opts.dtype)
    return model


# --- formats ---------------------------------------------------------------------------------

def _token_classification(found: Detected, opts: _Options) -> PRMModel:
    """TRL PRMTrainer output (or our ``export --format hf``): softmax(logits)[1] at each step's separator."""
    source = found.base or found.path
    _require_causal(found)
    kwargs: dict[str, Any] = {}
    if found.adapter is not None and not str((found.config.get("architectures") or [""])[0]).endswith(
            "ForTokenClassification"):
        kwargs["num_labels"] = _adapter_labels(found.path)
    net = AutoModelForTokenClassification.from_pretrained(
        source, dtype=torch.float32 if found.adapter else opts.dtype, use_safetensors=True,
        trust_remote_code=opts.trust_remote_code, **kwargs)
    head_name = "score" if hasattr(net, "score") else "classifier"
    if found.adapter is not None:
        replaced = merge_lora(net, found.path, found.adapter)
        if not any(name.startswith(head_name + ".") for name in replaced):
            raise InvalidInput(f"{found.path}: the adapter holds no '{head_name}' head weights (train with "
                               "task_type TOKEN_CLS or modules_to_save=['score'])")
        net = cast_parameters(net, opts.dtype)
    tokenizer = _tokenizer(found.path if (found.path / "tokenizer_config.json").is_file() else source, opts)
    template_id, separator, encoder = token_classification_template(found, tokenizer, opts.step_separator)
    head = LogitHead(getattr(net, head_name)).float()
    return _foreign(ForeignPRM, found, net.base_model, head, tokenizer, opts, template=template_id, encoder=encoder,
                    options={"template": template_id, "separator": separator})


def _qwen_prm(found: Detected, opts: _Options) -> PRMModel:
    """Qwen2.5-Math-PRM style, built natively: Qwen2Model + score (Linear, ReLU, Linear to 2 labels) at every
    ``<extra_0>`` of the chat-formatted input."""
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config.from_pretrained(found.path)  # the config class itself: no auto_map, no remote code
    backbone = Qwen2Model.from_pretrained(found.path, config=config, dtype=opts.dtype, use_safetensors=True)
    weights = _read_prefixed(found.path, "score.")
    hidden = int(config.hidden_size)
    mlp = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    try:
        mlp.load_state_dict(weights)
    except RuntimeError as exc:
        raise InvalidInput(f"{found.path}: the score head is not Linear({hidden}, {hidden}) -> ReLU -> "
                           f"Linear({hidden}, 2): {exc}") from exc
    tokenizer = _tokenizer(found.path, opts)
    separator = str(found.sidecar.get("step_separator", tpl.QWEN_PRM_SEPARATOR))
    sep_id = tokenizer.convert_tokens_to_ids(separator)
    if sep_id is None or tokenizer.encode(separator, add_special_tokens=False) != [sep_id]:
        raise InvalidInput(f"{found.path}: the tokenizer has no special token {separator!r}")
    system = str(found.sidecar.get("system_prompt", tpl.QWEN_PRM_SYSTEM))

    def render(problem: str, steps: Sequence[str]) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": "".join(s + separator for s in steps)}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))

    def encoder(problem: str, steps: Sequence[str], limit: int) -> Any:
        return tpl.encode_rendered(tokenizer, render, problem, steps, limit, separator_id=int(sep_id))
    return _foreign(ForeignPRM, found, backbone, LogitHead(mlp).float(), tokenizer, opts,
                    template=tpl.QWEN_PRM_TEMPLATE, encoder=encoder, options={"system": system, "sep": separator})


def _authors(found: Detected, opts: _Options) -> PRMModel:
    """The DreamPRM-Code authors' PRM: base + LoRA + Linear(hidden, 1) at the last token of each code prefix's
    ``<task>…<problem>…<starter_code>…</starter_code>`` text; sigmoid gives P(correct)."""
    assert found.base is not None and found.adapter is not None  # detect_format guarantees both
    lm = AutoModelForCausalLM.from_pretrained(found.base, dtype=torch.float32, use_safetensors=True,
                                              trust_remote_code=opts.trust_remote_code)
    merge_lora(lm, found.path, found.adapter)
    backbone = cast_parameters(cast(PreTrainedModel, lm.base_model), opts.dtype)
    tensors = load_file(str(found.path / AUTHORS_HEAD))
    head = torch.nn.Linear(int(lm.config.hidden_size), 1, bias=True)
    try:
        head.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InvalidInput(f"{found.path / AUTHORS_HEAD} is not Linear({lm.config.hidden_size}, 1): {exc}") from exc
    tokenizer = _tokenizer(found.path if (found.path / "tokenizer_config.json").is_file() else found.base, opts)
    fields = {k: str(found.sidecar.get(k, "")) for k in ("platform", "question_id", "title")}

    def encoder(problem: str, steps: Sequence[str], limit: int) -> Any:
        return tpl.encode_rows(tokenizer, lambda p: tpl.authors_texts(p, steps, **fields),
                               lambda p: tpl.AUTHORS_TEMPLATE.format(content=p, starter="", **fields).split(
                                   "<starter_code>")[0], problem, len(steps), limit)
    return _foreign(RowsPRM, found, backbone, head, tokenizer, opts, template=tpl.AUTHORS_TEMPLATE_ID,
                    encoder=encoder, options=fields)


def _orm(found: Detected, opts: _Options) -> PRMModel:
    """An outcome reward model (*ForSequenceClassification, 1 label), read at the last non-pad token of the
    chat-formatted (user: problem, assistant: code) or plain (problem, blank line, code) input."""
    _require_causal(found)
    net = AutoModelForSequenceClassification.from_pretrained(found.path, dtype=opts.dtype, use_safetensors=True,
                                                             trust_remote_code=opts.trust_remote_code)
    tokenizer = _tokenizer(found.path, opts)
    pad = net.config.pad_token_id
    chat = bool(getattr(tokenizer, "chat_template", None))

    def text(problem: str, code: str) -> str:
        if chat:
            messages = [{"role": "user", "content": problem}, {"role": "assistant", "content": code}]
            return str(tokenizer.apply_chat_template(messages, tokenize=False))
        return problem + ORM_SEPARATOR + code

    def rows(problem: str, codes: list[str], n_steps: int, limit: int, outcome: bool) -> Any:
        return tpl.encode_rows(tokenizer, lambda p: [text(p, c) for c in codes], lambda p: text(p, ""), problem,
                               n_steps, limit, add_special_tokens=not chat, outcome=outcome, pad_id=pad)

    def whole(problem: str, steps: Sequence[str], limit: int) -> Any:
        return rows(problem, ["".join(steps)], len(steps), limit, True)

    def prefixes(problem: str, steps: Sequence[str], limit: int) -> Any:
        return rows(problem, ["".join(steps[: k + 1]) for k in range(len(steps))], len(steps), limit, False)
    head = LogitHead(net.score if hasattr(net, "score") else net.classifier).float()
    return _foreign(RowsPRM, found, net.base_model, head, tokenizer, opts, template="orm-chat" if chat else "orm-plain",
                    encoder=whole, options={"chat": chat}, prefix_encoder=prefixes, aggregation="last")


# --- shared ----------------------------------------------------------------------------------

def _foreign(cls: type[ForeignPRM], found: Detected, backbone: Any, head: torch.nn.Module, tokenizer: Any,
             opts: _Options, *, template: str, encoder: Any, options: dict[str, Any], aggregation: str = "min",
             **kwargs: Any) -> ForeignPRM:
    manifest = foreign_manifest(found, backbone.config.to_dict(), dtype=str(opts.dtype).removeprefix("torch."),
                                aggregation=aggregation)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # PRMNetwork types its head as our Linear(hidden, 1); any module mapping (..., H) to (..., 1) serves
    return cls(PRMNetwork(backbone, cast(torch.nn.Linear, head)), tokenizer, manifest, fmt=found.format,
               template=template, encoder=encoder, revision=revision(found, options), pad_id=int(pad or 0), **kwargs)


def _tokenizer(source: Path, opts: _Options) -> Any:
    return AutoTokenizer.from_pretrained(source, trust_remote_code=opts.trust_remote_code)


def _require_causal(found: Detected) -> None:
    """Scores are read in one causal pass (right padding, no mask; a shared KV prefix): decoders only."""
    kind = str(found.config.get("model_type", "?"))
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise InvalidInput(f"{found.path}: model type {kind!r} is not a causal decoder; step scores are read from "
                           "causal models only (Llama, Qwen2, Mistral, Gemma, ...)")


def _adapter_labels(path: Path) -> int:
    with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as fh:
        for key in fh.keys():
            if key.endswith(("score.weight", "classifier.weight")) or ".score.modules_to_save" in key:
                return int(fh.get_slice(key).get_shape()[0])
    raise InvalidInput(f"{path}: the adapter holds no classification head (modules_to_save=['score'])")


def _read_prefixed(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix…`` from a model directory's safetensors files (sharded or not), unprefixed."""
    out: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                if key.startswith(prefix):
                    out[key.removeprefix(prefix)] = fh.get_tensor(key).float()
    if not out:
        raise InvalidInput(f"{path}: no {prefix}* tensors in its safetensors files")
    return out
