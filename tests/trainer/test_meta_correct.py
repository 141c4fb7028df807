"""Meta label correction: recovery of known labels, exact hypergradient, frozen parameters, tiny Llama smoke."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest
import torch

from trainer.batch import LabelledBatch
from trainer.config import CorrectConfig
from trainer.meta_correct import Mode, correct_labels, fit_plain, hypergradient, meta_loss, minibatches

if TYPE_CHECKING:
    from service.model import PRMNetwork

D, T = 8, 4  # feature dim, steps per sequence


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tensors here are tiny: on a shared 2-core box OpenMP spin-waits made BCE ~500x slower than one thread.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class LinearPRM(torch.nn.Module):
    """(B, T, d) step features -> (B, T) logits."""

    def __init__(self, d: int = D, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(d, 1, dtype=dtype)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lin(feats).squeeze(-1)  # (B, T)
        return logits


class LoraPRM(torch.nn.Module):
    """A frozen base layer + a trainable low-rank adapter and head, and a buffer: LoRA-shaped usage."""

    scale: torch.Tensor

    def __init__(self, d: int = D, hidden: int = 16, rank: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = torch.nn.Linear(d, hidden).requires_grad_(False)
        self.lora_a = torch.nn.Parameter(0.1 * torch.randn(rank, d))
        self.lora_b = torch.nn.Parameter(0.1 * torch.randn(hidden, rank))
        self.head = torch.nn.Linear(hidden, 1)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        delta = self.scale * (feats @ self.lora_a.T @ self.lora_b.T)  # (B, T, hidden)
        logits: torch.Tensor = self.head(torch.tanh(self.base(feats) + delta)).squeeze(-1)  # (B, T)
        return logits


@dataclass(frozen=True)
class Synthetic:
    train: LabelledBatch  # every step of every sequence, MC labels with 30 % flipped
    meta: LabelledBatch  # disjoint sequences, clean label at the final step
    held_out: LabelledBatch  # a third disjoint clean set, for evaluation only
    truth: torch.Tensor  # (n_samples,) true step labels of the training table
    flipped: torch.Tensor  # (n_samples,) bool


def _final_steps(x: torch.Tensor, y: torch.Tensor) -> LabelledBatch:
    n = x.shape[0]
    positions = torch.stack([torch.arange(n), torch.full((n,), T - 1)], dim=1)
    return LabelledBatch({"feats": x}, positions, y[:, -1], torch.arange(n))


def make_synthetic(seed: int = 0, n_train: int = 96, n_meta: int = 64, n_held: int = 256,
                   noise: float = 0.3) -> Synthetic:
    """Step features x ~ N(0, I); true label y* = 1[w*·x > 0]; MC labels = y* with ``noise`` of them flipped."""
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(D, generator=gen)

    def sequences(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, T, D, generator=gen)  # (n, T, d)
        return x, (x @ w_true > 0).float()  # (n, T)

    x, y = sequences(n_train)
    truth = y.reshape(-1)
    flipped = torch.zeros_like(truth, dtype=torch.bool)
    flipped[torch.randperm(len(truth), generator=gen)[: round(noise * len(truth))]] = True
    mc = torch.where(flipped, 1.0 - truth, truth)
    rows, steps = torch.meshgrid(torch.arange(n_train), torch.arange(T), indexing="ij")
    positions = torch.stack([rows.reshape(-1), steps.reshape(-1)], dim=1)  # row-major: sample id = row * T + step
    train = LabelledBatch({"feats": x}, positions, mc, torch.arange(len(mc)))
    return Synthetic(train, _final_steps(*sequences(n_meta)), _final_steps(*sequences(n_held)), truth, flipped)


CONFIG = CorrectConfig(iterations=300, batch_size=16, meta_batch_size=32, lr=0.05, inner_lr=1.0, beta_lr=0.3,
                       log_every=50)


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return make_synthetic()


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_mode_recovers_true_labels_and_beats_plain_training(seed: int) -> None:
    data = make_synthetic(seed)
    n = len(data.truth)
    corrected_model = LinearPRM(seed=seed)
    result = correct_labels(corrected_model, data.train, data.meta, n, data.train.labels, CONFIG)
    mae_before = (data.train.labels - data.truth).abs().mean().item()
    mae_after = (result.corrected - data.truth).abs().mean().item()
    assert result.corrected.shape == (n,)
    assert mae_after <= 0.7 * mae_before, (mae_before, mae_after)
    assert (result.corrected - data.truth).abs()[data.flipped].mean() < 0.5  # flipped labels crossed over
    plain_model = LinearPRM(seed=seed)
    fit_plain(plain_model, data.train, CONFIG)
    corrected_loss, plain_loss = meta_loss(corrected_model, data.held_out), meta_loss(plain_model, data.held_out)
    assert corrected_loss < 0.8 * plain_loss, (corrected_loss, plain_loss)
    assert len(result.history) == CONFIG.iterations // CONFIG.log_every
    assert result.history[-1]["frac_moved"] > 0.1


def test_weights_mode_downweights_noisy_samples(data: Synthetic) -> None:
    n = len(data.truth)
    model = LinearPRM()
    result = correct_labels(model, data.train, data.meta, n, data.train.labels, replace(CONFIG, mode="weights"))
    w = result.weights
    assert w.shape == (n,) and float(w.min()) >= 0.0 and float(w.max()) <= 2.0
    assert w[data.flipped].mean() < 0.6 * w[~data.flipped].mean(), (w[data.flipped].mean(), w[~data.flipped].mean())
    assert torch.equal(result.corrected, data.train.labels)  # weights mode keeps the MC labels
    assert all(0.0 <= row["min_weight"] and row["mean_weight"] <= 2.0 for row in result.history)


@pytest.mark.parametrize("mode", ["labels", "weights"])
def test_without_outer_updates_it_is_plain_training(data: Synthetic, mode: Mode) -> None:
    # beta_lr = 0 leaves labels/weights at their start, so the real update (which reuses the unrolled step's
    # graph) must match fit_plain's ordinary backward step for step. Soft labels avoid the logit clip.
    soft = replace(data.train, labels=0.1 + 0.8 * data.train.labels)
    config = replace(CONFIG, mode=mode, beta_lr=0.0, iterations=20)
    a, b = LinearPRM(), LinearPRM()
    correct_labels(a, soft, data.meta, len(soft.labels), soft.labels, config)
    fit_plain(b, soft, config)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def _reference_meta_loss(model: LinearPRM, batch: LabelledBatch, meta: LabelledBatch, param: torch.Tensor,
                         mode: Mode, lr: float, steps: int) -> torch.Tensor:
    """L_meta after ``steps`` virtual SGD steps, by hand (logistic-regression gradients, no autograd)."""
    w, b = model.lin.weight.detach()[0].clone(), model.lin.bias.detach()[0].clone()
    x = batch.inputs["feats"][batch.positions[:, 0], batch.positions[:, 1]]  # (N, d)
    for _ in range(steps):
        p = torch.sigmoid(x @ w + b)
        if mode == "labels":
            residual = p - torch.sigmoid(param[batch.sample_ids])
        else:
            residual = param[batch.sample_ids] * (p - batch.labels)
        w, b = w - lr * residual @ x / len(x), b - lr * residual.mean()
    z = meta.inputs["feats"][meta.positions[:, 0], meta.positions[:, 1]] @ w + b
    return torch.nn.functional.binary_cross_entropy_with_logits(z, meta.labels)


@pytest.mark.parametrize(("mode", "steps"), [("labels", 1), ("weights", 1), ("labels", 2)])
def test_hypergradient_matches_finite_differences(mode: Mode, steps: int) -> None:
    gen = torch.Generator().manual_seed(3)
    n_samples = 12
    model = LinearPRM(seed=3, dtype=torch.float64)
    positions = torch.tensor([[0, 0], [0, 2], [1, 1], [1, 3], [2, 0], [2, 3], [3, 2], [3, 3]])
    labels = torch.rand(len(positions), generator=gen, dtype=torch.float64)
    batch = LabelledBatch({"feats": torch.randn(4, T, D, generator=gen, dtype=torch.float64)}, positions, labels,
                          torch.tensor([0, 2, 3, 5, 6, 8, 9, 11]))  # samples 1, 4, 7, 10 not in the batch
    meta = _final_steps(torch.randn(5, T, D, generator=gen, dtype=torch.float64),
                        (torch.rand(5, T, generator=gen) > 0.5).double())
    param = torch.randn(n_samples, generator=gen, dtype=torch.float64)
    if mode == "weights":
        param = param.abs() + 0.2
    config = CorrectConfig(mode=mode, inner_lr=0.7, inner_steps=steps)
    auto = hypergradient(model, batch, meta, param, config)
    h = 1e-6
    fd = torch.stack([(_reference_meta_loss(model, batch, meta, param + h * e, mode, 0.7, steps)
                       - _reference_meta_loss(model, batch, meta, param - h * e, mode, 0.7, steps)) / (2 * h)
                      for e in torch.eye(n_samples, dtype=torch.float64)])
    assert fd.abs().max() > 1e-4  # not a vacuous comparison
    torch.testing.assert_close(auto, fd, rtol=1e-4, atol=1e-9)
    assert torch.equal(auto[[1, 4, 7, 10]], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["labels", "weights"])
def test_frozen_parameters_stay_frozen(data: Synthetic, mode: Mode) -> None:
    model = LoraPRM()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("base.") or k == "scale"}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    assert set(trainable) == {"lora_a", "lora_b", "head.weight", "head.bias"}
    config = replace(CONFIG, mode=mode, iterations=5, log_every=1)
    result = correct_labels(model, data.train, data.meta, len(data.truth), data.train.labels, config)
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    assert model.base.weight.grad is None and model.base.bias.grad is None
    for k, v in model.named_parameters():
        if k in trainable:
            assert not torch.equal(v.detach(), trainable[k]), k
    assert len(result.history) == 5
    assert all(torch.isfinite(torch.tensor([r["inner_loss"], r["meta_loss"]])).all() for r in result.history)


def test_minibatches_cover_every_row_once_per_epoch(data: Synthetic) -> None:
    sample = minibatches(data.train, batch_size=40, seed=7)  # 96 rows: batches of 40, 40, 16
    seen = torch.cat([sample(i).sample_ids for i in range(3)])
    assert sorted(seen.tolist()) == list(range(len(data.truth)))
    batch = sample(1)
    feats = batch.inputs["feats"][batch.positions[:, 0], batch.positions[:, 1]]  # remapped rows
    original = data.train.inputs["feats"][data.train.positions[batch.sample_ids, 0],
                                          data.train.positions[batch.sample_ids, 1]]
    assert torch.equal(feats, original) and torch.equal(batch.labels, data.train.labels[batch.sample_ids])
    assert not torch.equal(sample(3).sample_ids, sample(0).sample_ids)  # a new permutation next epoch


def test_rejects_inconsistent_inputs(data: Synthetic) -> None:
    with pytest.raises(ValueError, match="positions"):
        LabelledBatch({"feats": torch.zeros(1, T, D)}, torch.zeros(3, 2, dtype=torch.long), torch.zeros(2),
                      torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="init_labels"):
        correct_labels(LinearPRM(), data.train, data.meta, 5, data.train.labels, CONFIG)
    with pytest.raises(ValueError):
        CorrectConfig(weight_clamp=(2.0, 0.0))


def _tiny_llama_batches() -> tuple[PRMNetwork, LabelledBatch, LabelledBatch]:
    from tests.tiny import tiny_prm

    prm = tiny_prm()
    solutions = [["def main():\n    n = int(input())\n", "def solve(n):\n    return n\n"],
                 ["import sys\n", "def helper(xs):\n    return sum(xs)\n", "print(helper([1]))\n"],
                 ["class Solution:\n    def twoSum(self, nums, target):\n        return []\n"],
                 ["def add(a, b):\n    return a + b\n", "print(add(1, 2))\n"]]
    encoded = [prm.encode("Return the sum of two integers.", steps) for steps in solutions]
    width = max(e.n_tokens for e in encoded)
    ids = torch.full((len(encoded), width), prm.pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : e.n_tokens], mask[row, : e.n_tokens] = torch.tensor(e.input_ids), 1
    positions = torch.tensor([[row, p] for row, e in enumerate(encoded) for p in e.step_end_positions])
    labels = torch.linspace(0.1, 0.9, len(positions))
    train = LabelledBatch({"input_ids": ids[:3], "attention_mask": mask[:3]}, positions[:-2], labels[:-2],
                          torch.arange(len(positions) - 2))
    final = torch.tensor([[0, encoded[3].step_end_positions[-1]]])
    meta = LabelledBatch({"input_ids": ids[3:], "attention_mask": mask[3:]}, final, torch.ones(1), torch.zeros(1))
    return prm.network, train, meta


@pytest.mark.parametrize("mode", ["labels", "weights"])
def test_tiny_llama_smoke(mode: Mode) -> None:
    network, train, meta = _tiny_llama_batches()
    n = len(train.labels)
    head_before = network.head.weight.detach().clone()
    config = CorrectConfig(mode=mode, iterations=2, batch_size=2, meta_batch_size=1, lr=1e-3, log_every=1)
    result = correct_labels(network, train, meta, n, train.labels, config)
    assert result.corrected.shape == result.weights.shape == (n,)
    assert bool(((result.corrected >= 0) & (result.corrected <= 1)).all())
    assert bool(((result.weights >= 0) & (result.weights <= 2)).all())
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor([r["inner_loss"], r["meta_loss"]])).all() for r in result.history)
    assert not torch.equal(network.head.weight, head_before) and not network.training  # eval mode restored
    assert torch.isfinite(torch.tensor(meta_loss(network, meta)))
