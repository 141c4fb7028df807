"""The ``correct`` stage: meta label correction (``trainer.meta_correct``) on the fit stage's checkpoint, the
corrected labels and the corrected and uncorrected checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from service.checkpoints.adapter import load_added_rows_and_head, load_lora
from trainer.config import CorrectConfig, FitConfig, config_to_dict
from trainer.fit import (
    batch_sampler,
    init_prm,
    prepare_trainable,
    run_examples,
    save_checkpoint,
    weights_of,
)
from trainer.manifest import stage
from trainer.meta_correct import correct_labels, fit_plain, meta_loss
from trainer.records import StepLabel
from trainer.rundir import labels_store
from trainer.store import atomic_write_text


def _write_corrected(run: Path, table: list[StepLabel], corrected: torch.Tensor, weights: torch.Tensor) -> None:
    rows = [{**lb.model_dump(), "corrected": float(c), "weight": float(w)}
            for lb, c, w in zip(table, corrected.tolist(), weights.tolist(), strict=True)]
    atomic_write_text(run / "correct" / "labels.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def run(rundir: Path, fit_config: FitConfig, config: CorrectConfig) -> dict[str, Any]:
    """Meta label correction, and the same loop on the uncorrected MC labels for the ablation."""
    inputs = [labels_store(rundir).path]
    with stage(rundir / "correct", "correct", {"fit": fit_config, "correct": config}, inputs) as st:
        results: dict[str, Any] = {}
        for variant in ("uncorrected", "corrected"):
            model = init_prm(fit_config.model, max_tokens=fit_config.serve_max_tokens, seed=fit_config.seed)
            train, table, meta = run_examples(rundir, model, config.max_tokens or fit_config.max_tokens)
            if config.warm_start:
                load_added_rows_and_head(model, rundir / "fit" / "checkpoint")
            network = prepare_trainable(model.network, fit_config, model.separator_id)
            if config.warm_start:
                load_lora(network, rundir / "fit" / "checkpoint")
            train_fn = batch_sampler(train, config.batch_size, model.pad_id, config.seed)
            meta_fn = batch_sampler(meta, config.meta_batch_size, model.pad_id, config.seed + 1)
            if variant == "corrected":
                mc = torch.tensor([lb.mc_label for lb in table])
                out = correct_labels(network, train_fn, meta_fn, len(table), mc, config)
                _write_corrected(rundir, table, out.corrected, out.weights)
                history = out.history
            else:
                history = fit_plain(network, train_fn, config)
            final = meta_loss(network, [meta_fn(i) for i in range(max(1, len(meta) // config.meta_batch_size))])
            results[variant] = {"meta_loss": float(final), "history": history}
            summary = {"stage": "correct", "variant": variant, "mode": config.mode, "iterations": config.iterations,
                       "warm_start": config.warm_start, **config_to_dict(fit_config)}
            out = rundir / ("correct/checkpoint" if variant == "corrected" else "correct/uncorrected")
            save_checkpoint(model, out, summary, rundir, weights=weights_of(fit_config))
        atomic_write_text(rundir / "correct" / "history.json", json.dumps(results, indent=1))
        st.count("labels", len(table))
        return {k: v["meta_loss"] for k, v in results.items()}
