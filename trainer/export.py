"""Stage ``export``: the checkpoint directory of DESIGN §4 (+ model card), and TRL PRM rows."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from service.aggregate import Aggregation
from service.checkpoints.adapter import copy_adapter_checkpoint
from service.checkpoints.backbone import recorded_base
from service.checkpoints.manifest import (
    BaseModelSpec,
    read_manifest,
)
from service.checkpoints.save import export_checkpoint
from service.model import PRMModel
from trainer.config import ExportConfig
from trainer.manifest import stage, stage_seconds, untimed_attempts
from trainer.records import Candidate, Problem, StepLabel, TRLRow
from trainer.rundir import SCORERS, executed_candidates, label_table, problems_store, run_problems


def trl_rows(problems: Mapping[str, Problem], candidates: Iterable[Candidate],
             labels: Mapping[tuple[str, str, int], StepLabel], *, threshold: float = 0.5) -> Iterable[TRLRow]:
    """TRL's stepwise-supervision rows: prompt, the step texts, one boolean label per step (its MC label
    ``>= threshold``; TRL's ``PRMTrainer`` takes ``int(label)``), and the MC labels in ``soft_labels``."""
    for cand in candidates:
        keys = [(cand.problem_id, cand.candidate_id, s.index) for s in cand.steps]
        if cand.steps and all(k in labels for k in keys):
            soft = [labels[k].mc_label for k in keys]
            yield TRLRow(prompt=problems[cand.problem_id].prompt, completions=[s.text for s in cand.steps],
                         labels=[p >= threshold for p in soft], soft_labels=soft)


def write_trl(path: Path, rows: Iterable[TRLRow]) -> int:
    n = 0
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row.model_dump()) + "\n")
            n += 1
    return n


def model_card(*, name: str, base_model: BaseModelSpec, training: dict[str, Any], evaluation_md: str | None,
               recipe_md: str | None = None) -> str:
    """The model card, built from the run's records (nothing typed by hand)."""
    lines = [f"# {name}", "", "A DreamPRM-Code process reward model: a value head on "
             f"`{base_model.id}` scoring each function step of a program.", "",
             "## Training", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in sorted(training.items())]
    if recipe_md:
        lines += ["", "## Recipe: stage times on the machine that ran it", "", recipe_md]
    lines += ["", "## Evaluation", "", evaluation_md or "_No evaluation was run for this checkpoint._", ""]
    return "\n".join(lines)


logger = logging.getLogger(__name__)


def run(rundir: Path, config: ExportConfig, out: Path) -> Path:
    """The product checkpoint: the chosen PRM (``config.scorer``; auto: the evaluation's winner), renamed,
    with the evaluation in its model card. An adapter checkpoint is copied, tensors unchanged."""
    with stage(rundir / "export", "export", config):
        scorer, aggregation = choose(rundir, config)
        source = rundir / SCORERS[scorer]
        manifest = read_manifest(source)
        manifest = manifest.model_copy(update={"base_model": recorded_base(manifest.base_model)})
        parts = [rundir / "evaluate" / "verify.md", rundir / "evaluate" / "eval.md"]
        eval_md = "\n".join(p.read_text() for p in parts if p.is_file()) or None
        eval_json = rundir / "evaluate" / "eval.json"
        metrics = json.loads(eval_json.read_text()) if eval_json.is_file() else {}
        card = model_card(name=config.name, base_model=manifest.base_model, training=manifest.training,
                          evaluation_md=eval_md, recipe_md=_recipe_md(rundir))
        plots = sorted((rundir / "evaluate").glob("*.png"))  # the card's figures
        if manifest.weights == "adapter":
            copy_adapter_checkpoint(source, out, manifest.model_copy(update={
                "name": config.name, "default_aggregation": aggregation,
                "metrics": _headline(metrics)}), card=card, files=plots)
        else:
            model = PRMModel.load(source, device="cpu", dtype="float32")
            export_checkpoint(model.network, model.tokenizer, out, name=config.name,
                              base_model=manifest.base_model, max_tokens=model.max_tokens,
                              default_aggregation=aggregation, training=manifest.training,
                              metrics=_headline(metrics), card=card)
            for plot in plots:
                shutil.copyfile(plot, out / plot.name)
        problems = {p.id: p for p in run_problems(rundir)}
        n = write_trl(rundir / "export" / "trl_prm.jsonl",
                      trl_rows(problems, executed_candidates(rundir, "train"), label_table(rundir),
                               threshold=config.trl_threshold))
        logger.info("exported %s and %d TRL rows", out, n)
        return out


def choose(run: Path, config: ExportConfig) -> tuple[str, Aggregation]:
    """The scorer and default aggregation to ship: as configured, or (``auto``) the evaluation's winner."""
    from trainer.verify import winner

    scorer, aggregation = config.scorer, config.default_aggregation
    if "auto" in (scorer, aggregation):
        path = run / "evaluate" / "verify.json"
        if not path.is_file():
            raise ValueError("export.scorer/default_aggregation auto need the evaluation: run evaluate first")
        present = [s for s in SCORERS if (run / SCORERS[s] / "prm.json").is_file() and scorer in ("auto", s)]
        best_scorer, best_agg, why = winner(json.loads(path.read_text()), present)
        logger.info("export: %s/%s (%s)", best_scorer, best_agg, why)
        scorer = best_scorer if scorer == "auto" else scorer
        aggregation = best_agg if aggregation == "auto" else aggregation  # type: ignore[assignment]
    return scorer, aggregation  # type: ignore[return-value]


STAGES = ("generate", "execute", "label", "fit", "orm", "correct", "evaluate")


def _recipe_md(run: Path) -> str:
    """Stage wall times (the attempts that recorded their end; killed ones are counted, not timed) and the
    settings of the run, from its manifests."""
    rows = [(name, stage_seconds(run / name)) for name in STAGES]
    lines = ["| stage | wall time | counts |", "|---|---|---|"]
    for name, seconds in rows:
        if seconds is None:
            continue
        counts = json.loads((run / name / "run.json").read_text()).get("counts", {})
        killed = untimed_attempts(run / name)
        note = f" (+ {killed} killed attempt{'s' * (killed > 1)}, untimed)" if killed else ""
        lines.append(f"| {name} | {seconds / 60:.1f} min{note} | {', '.join(f'{k} {v}' for k, v in counts.items())} |")
    total = sum(s for _, s in rows if s is not None)
    lines += [f"| all | {total / 60:.1f} min | |", ""]
    settings = run / "settings.json"
    if settings.is_file():
        lines += ["Settings (`settings.json` of the run):", "", "```json", settings.read_text().strip(), "```", ""]
    return "\n".join(lines)


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth carrying in prm.json (the full report stays in the model card)."""
    return {k: report[k] for k in ("n_problems", "n_candidates", "random", "oracle") if k in report}


def describe(run: Path) -> dict[str, Any]:
    """Counts of what the run holds, for logs and the model card."""
    parts: dict[str, int] = {}
    for r in problems_store(run).read():
        parts[r.part] = parts.get(r.part, 0) + 1
    cands = executed_candidates(run)
    by_source: dict[str, dict[str, int]] = {}
    policy_rates: dict[str, list[int]] = {}  # problem -> [passed, sampled] of the policy's own samples
    for c in cands:
        passed = int(bool(c.exec and c.exec.passed))
        counts = by_source.setdefault(c.provenance, {"candidates": 0, "passed": 0})
        counts["candidates"] += 1
        counts["passed"] += passed
        if c.provenance == "policy":
            rate = policy_rates.setdefault(c.problem_id, [0, 0])
            rate[0] += passed
            rate[1] += 1
    histogram: dict[str, int] = {}
    for n_pass, n in policy_rates.values():
        histogram[f"{n_pass}/{n}"] = histogram.get(f"{n_pass}/{n}", 0) + 1
    labels = list(label_table(run).values())
    prefix = [lb.mc_label for lb in labels if not lb.final]
    from trainer.pools import pool_summary

    return {"problems": parts, "candidates": len(cands), "pool_by_model": pool_summary(cands),
            "candidates_passed": sum(1 for c in cands if c.exec and c.exec.passed),
            "by_provenance": by_source, "policy_passes_per_problem": dict(sorted(histogram.items())),
            "step_labels": len(labels),
            "prefix_labels": {"n": len(prefix), "mean": round(sum(prefix) / len(prefix), 4) if prefix else None,
                              "zero": sum(1 for x in prefix if x == 0.0), "one": sum(1 for x in prefix if x == 1.0)}}
