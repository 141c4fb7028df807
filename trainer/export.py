"""Stage ``export``: the checkpoint directory of DESIGN §4 (+ model card), and TRL PRM rows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from service.aggregate import Aggregation
from service.manifest import BaseModelSpec, HeadSpec, PRMManifest
from service.model import PRMModel, PRMNetwork
from trainer.fit import merge_trainable
from trainer.records import Candidate, Problem, StepLabel, TRLRow


def export_checkpoint(network: PRMNetwork, tokenizer: Any, out: Path, *, name: str, base_model: BaseModelSpec,
                      max_tokens: int, default_aggregation: Aggregation, training: dict[str, Any],
                      metrics: dict[str, Any], card: str) -> PRMModel:
    """Merge adapters, write ``out`` atomically with ``prm.json`` and ``MODEL_CARD.md``."""
    network = merge_trainable(network).eval()
    hidden = int(network.head.in_features)
    dtype = str(next(network.backbone.parameters()).dtype).removeprefix("torch.")
    manifest = PRMManifest(name=name, base_model=base_model, head=HeadSpec(in_features=hidden), dtype=dtype,
                           default_aggregation=default_aggregation, max_tokens=max_tokens, training=training,
                           metrics=metrics)
    model = PRMModel(network, tokenizer, manifest)
    model.save(out, overwrite=True, extra_files={"MODEL_CARD.md": card})
    return model


def trl_rows(problems: Mapping[str, Problem], candidates: Iterable[Candidate],
             labels: Mapping[tuple[str, str, int], StepLabel]) -> Iterable[TRLRow]:
    """TRL's stepwise-supervision rows: prompt, the step texts, one label per step."""
    for cand in candidates:
        keys = [(cand.problem_id, cand.candidate_id, s.index) for s in cand.steps]
        if cand.steps and all(k in labels for k in keys):
            yield TRLRow(prompt=problems[cand.problem_id].prompt, completions=[s.text for s in cand.steps],
                         labels=[labels[k].mc_label for k in keys])


def write_trl(path: Path, rows: Iterable[TRLRow]) -> int:
    n = 0
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row.model_dump()) + "\n")
            n += 1
    return n


def model_card(*, name: str, base_model: BaseModelSpec, training: dict[str, Any], evaluation_md: str | None) -> str:
    """The model card, built from the run's records (nothing typed by hand)."""
    lines = [f"# {name}", "", "A DreamPRM-Code process reward model: a value head on "
             f"`{base_model.id}` scoring each function step of a program.", "",
             "## Training", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in sorted(training.items())]
    lines += ["", "## Evaluation", "", evaluation_md or "_No evaluation was run for this checkpoint._", ""]
    return "\n".join(lines)
