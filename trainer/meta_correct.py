"""Meta label correction (DESIGN §7 "correct"): bi-level learning of corrected step labels or sample weights.

Owns the unrolled virtual step, the hypergradient and the alternating β/θ loop; model-agnostic (any module
that returns (B, T) logits). Imports torch only: nothing from service/, no transformers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainer.batch import LabelledBatch, select_positions
from trainer.config import CorrectConfig, Mode
from trainer.manifest import progress

logger = logging.getLogger(__name__)


Select = Callable[[Tensor, LabelledBatch], Tensor]
Batches = LabelledBatch | Sequence[LabelledBatch] | Callable[[int], LabelledBatch]


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    """``corrected``: labels to train on (σ(β), or the MC labels unchanged in weights mode); ``weights``:
    per-sample weights (the learnt w, or ones in labels mode), so consumers always train on w·BCE(z, ỹ)."""

    corrected: Tensor
    weights: Tensor
    history: list[dict[str, float]]


def minibatches(data: LabelledBatch, batch_size: int, seed: int) -> Callable[[int], LabelledBatch]:
    """Iteration -> minibatch of ``batch_size`` sequences of ``data``, a fresh permutation every epoch.

    A pure function of the iteration (resumable, and the same order for corrected and plain runs).
    """
    n_rows = next(iter(data.inputs.values())).shape[0]
    per_epoch = math.ceil(n_rows / batch_size)

    def batch(i: int) -> LabelledBatch:
        epoch, j = divmod(i, per_epoch)
        perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        rows = perm[j * batch_size:(j + 1) * batch_size].to(data.positions.device)
        remap = torch.full((n_rows,), -1, dtype=torch.long, device=rows.device)
        remap[rows] = torch.arange(len(rows), device=rows.device)
        keep = remap[data.positions[:, 0]] >= 0  # (N,) positions in the chosen rows
        positions = torch.stack([remap[data.positions[keep, 0]], data.positions[keep, 1]], dim=1)
        return LabelledBatch({k: v[rows] for k, v in data.inputs.items()}, positions, data.labels[keep],
                             data.sample_ids[keep])

    return batch


def _batch_fn(batches: Batches, batch_size: int, seed: int) -> Callable[[int], LabelledBatch]:
    if isinstance(batches, LabelledBatch):
        return minibatches(batches, batch_size, seed)
    if callable(batches):
        return batches
    seq = batches
    return lambda i: seq[i % len(seq)]


def _trainable(model: torch.nn.Module) -> dict[str, Tensor]:
    params: dict[str, Tensor] = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no parameters with requires_grad")
    return params


def _forward(model: torch.nn.Module, params: dict[str, Tensor], batch: LabelledBatch, select: Select) -> Tensor:
    # Frozen parameters and buffers are not in ``params``: functional_call takes them from the module.
    return select(functional_call(model, params, args=(), kwargs=batch.inputs), batch)


def _bce(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 logits: the loss in fp32
    return F.binary_cross_entropy_with_logits(logits.to(dtype), targets.to(dtype), reduction=reduction)


def _inner_loss(logits: Tensor, batch: LabelledBatch, meta_param: Tensor, mode: Mode) -> Tensor:
    if mode == "labels":
        return _bce(logits, torch.sigmoid(meta_param[batch.sample_ids]))
    per_step = _bce(logits, batch.labels, reduction="none")  # (N,)
    return (meta_param[batch.sample_ids] * per_step).mean()


def _unrolled(model: torch.nn.Module, params: dict[str, Tensor], batch: LabelledBatch, meta_batch: LabelledBatch,
              meta_param: Tensor, config: CorrectConfig, select: Select) -> tuple[Tensor, Tensor, Tensor]:
    """Virtual SGD step(s) θ' = θ - η∇L_inner(θ; β), then L_meta(θ'(β)).

    Returns (step logits at θ with their graph, inner loss at θ, meta loss differentiable in β).
    The inner forwards need double backward, which fused SDPA kernels lack: force the math kernel there.
    """
    virtual, first_logits, first_loss = params, None, None
    for _ in range(config.inner_steps):
        with sdpa_kernel(SDPBackend.MATH):
            logits = _forward(model, virtual, batch, select)
        loss = _inner_loss(logits, batch, meta_param, config.mode)
        if first_logits is None:
            first_logits, first_loss = logits, loss
        grads = torch.autograd.grad(loss, list(virtual.values()), create_graph=True, allow_unused=True,
                                    materialize_grads=True)
        virtual = {name: p - config.inner_lr * g for (name, p), g in zip(virtual.items(), grads, strict=True)}
    meta_logits = _forward(model, virtual, meta_batch, select)
    assert first_logits is not None and first_loss is not None
    return first_logits, first_loss, _bce(meta_logits, meta_batch.labels)


def hypergradient(model: torch.nn.Module, batch: LabelledBatch, meta_batch: LabelledBatch, meta_param: Tensor,
                  config: CorrectConfig, select: Select = select_positions) -> Tensor:
    """∂L_meta(θ'(β))/∂β (or ∂/∂w in weights mode) through the unrolled inner step(s); same shape as β."""
    leaf = meta_param.detach().requires_grad_(True)
    _, _, meta = _unrolled(model, _trainable(model), batch, meta_batch, leaf, config, select)
    (grad,) = torch.autograd.grad(meta, [leaf])
    return grad


def _init_meta_param(init_labels: Tensor, config: CorrectConfig, device: torch.device) -> Tensor:
    labels = init_labels.detach().to(device=device, dtype=torch.promote_types(init_labels.dtype, torch.float32))
    if config.mode == "labels":
        return torch.logit(labels.clamp(config.label_clip, 1.0 - config.label_clip)).requires_grad_(True)
    return torch.ones_like(labels).requires_grad_(True)


def _make_optimizer(params: list[Tensor], config: CorrectConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)


def _stats(meta_param: Tensor, init_labels: Tensor, mode: Mode) -> dict[str, float]:
    with torch.no_grad():
        if mode == "weights":
            return {"mean_weight": meta_param.mean().item(), "min_weight": meta_param.min().item(),
                    "frac_weight_below_half": (meta_param < 0.5).float().mean().item()}
        shift = (torch.sigmoid(meta_param) - init_labels).abs()
        return {"mean_label_shift": shift.mean().item(), "frac_moved": (shift > 0.1).float().mean().item()}


def _due(it: int, config: CorrectConfig) -> bool:
    return (it + 1) % config.log_every == 0 or it + 1 == config.iterations


def _record(history: list[dict[str, float]], tag: str, it: int, **values: float) -> None:
    history.append({"iteration": float(it + 1), **values})
    logger.info("%s it=%d %s", tag, it + 1, " ".join(f"{k}={v:.4f}" for k, v in values.items()))


def correct_labels(model: torch.nn.Module, train_batches: Batches, meta_batches: Batches, n_samples: int,
                   init_labels: Tensor, config: CorrectConfig, select: Select = select_positions) -> CorrectionResult:
    """Alternate a β (or w) step on the hypergradient and a real θ step on the corrected inner loss.

    Args:
        model: returns (B, T) logits from ``**batch.inputs``; updated in place. Only parameters with
            ``requires_grad`` are unrolled and trained; the unrolled step roughly doubles activation memory, so
            for large backbones use LoRA (θ = adapters + head) and small batches.
        train_batches / meta_batches: one full ``LabelledBatch`` (sampled with ``batch_size`` /
            ``meta_batch_size``), a sequence (cycled), or a function of the iteration. Meta batches label the
            final step of complete solutions with their clean pass/fail outcome, and are disjoint from training.
        n_samples / init_labels: size of the step-label table and its MC labels (n_samples,).
    """
    if init_labels.shape != (n_samples,):
        raise ValueError(f"init_labels must have shape ({n_samples},), got {tuple(init_labels.shape)}")
    params = _trainable(model)
    device = next(iter(params.values())).device
    meta_param = _init_meta_param(init_labels, config, device)
    init = init_labels.detach().to(device=device, dtype=meta_param.dtype)
    train_fn = _batch_fn(train_batches, config.batch_size, config.seed)
    meta_fn = _batch_fn(meta_batches, config.meta_batch_size, config.seed + 1)
    meta_opt = torch.optim.Adam([meta_param], lr=config.beta_lr)  # dense: momentum also moves rows not in the batch
    opt = _make_optimizer(list(params.values()), config)
    history: list[dict[str, float]] = []
    was_training = model.training
    model.train()
    for it in progress(range(config.iterations), total=config.iterations, desc=f"correct [{config.mode}]"):
        batch, meta_batch = train_fn(it).to(device), meta_fn(it).to(device)
        logits, inner, meta = _unrolled(model, params, batch, meta_batch, meta_param, config, select)
        (meta_param.grad,) = torch.autograd.grad(meta, [meta_param], retain_graph=True)
        meta_opt.step()
        if config.mode == "weights":
            with torch.no_grad():
                meta_param.clamp_(*config.weight_clamp)
        _real_step(opt, params, logits, batch, meta_param, config.mode)
        if _due(it, config):  # .item() syncs an accelerator: only when logging
            _record(history, f"correct[{config.mode}]", it, inner_loss=inner.item(), meta_loss=meta.item(),
                    **_stats(meta_param, init, config.mode))
    model.train(was_training)
    final = meta_param.detach()
    if config.mode == "labels":
        return CorrectionResult(torch.sigmoid(final), torch.ones_like(final), history)
    return CorrectionResult(init.clone(), final.clone(), history)


def _apply(opt: torch.optim.Optimizer, params: dict[str, Tensor], grads: Sequence[Tensor]) -> None:
    for p, g in zip(params.values(), grads, strict=True):
        p.grad = g
    opt.step()
    opt.zero_grad(set_to_none=True)


def _real_step(opt: torch.optim.Optimizer, params: dict[str, Tensor], logits: Tensor, batch: LabelledBatch,
               meta_param: Tensor, mode: Mode) -> None:
    """θ ← opt step on the inner loss with the updated (detached) labels or weights.

    Reuses the graph of the unrolled step's first forward (same θ, same batch): only ∂L/∂logits changes,
    which saves one forward pass per iteration.
    """
    z = logits.detach().requires_grad_(True)
    (dz,) = torch.autograd.grad(_inner_loss(z, batch, meta_param.detach(), mode), [z])
    _apply(opt, params, torch.autograd.grad(logits, list(params.values()), grad_outputs=dz, allow_unused=True,
                                            materialize_grads=True))


def fit_plain(model: torch.nn.Module, batches: Batches, config: CorrectConfig,
              select: Select = select_positions) -> list[dict[str, float]]:
    """The uncorrected baseline: the same real-update loop (optimizer, batch order) on the MC labels."""
    params = _trainable(model)
    device = next(iter(params.values())).device
    train_fn = _batch_fn(batches, config.batch_size, config.seed)
    opt = _make_optimizer(list(params.values()), config)
    history: list[dict[str, float]] = []
    was_training = model.training
    model.train()
    for it in progress(range(config.iterations), total=config.iterations, desc="correct [uncorrected ablation]"):
        batch = train_fn(it).to(device)
        loss = _bce(_forward(model, params, batch, select), batch.labels)
        _apply(opt, params, torch.autograd.grad(loss, list(params.values()), allow_unused=True,
                                                materialize_grads=True))
        if _due(it, config):
            _record(history, "plain", it, inner_loss=loss.item())
    model.train(was_training)
    return history


def meta_loss(model: torch.nn.Module, meta_batches: LabelledBatch | Sequence[LabelledBatch],
              select: Select = select_positions) -> float:
    """Mean BCE of ``model`` over every labelled position of ``meta_batches`` (evaluation; no grad)."""
    seq = [meta_batches] if isinstance(meta_batches, LabelledBatch) else list(meta_batches)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in (b.to(device) for b in seq):
            total += _bce(select(model(**batch.inputs), batch), batch.labels, reduction="sum").item()
            count += batch.labels.numel()
    return total / max(count, 1)
