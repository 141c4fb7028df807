"""The whole trainer pipeline on a slice of the training set: a scripted policy, the real
sandbox, the tiny PRM; then the export loads in the service with the trainer's scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from service.checkpoints.adapter import load_added_rows_and_head, load_lora
from service.checkpoints.backbone import base_sha256
from service.checkpoints.manifest import PRMManifest, read_manifest
from service.checkpoints.save import export_checkpoint
from service.errors import InvalidInput
from service.model import PRMModel
from tests.conftest import shared_data
from tests.tiny import save_tiny_lm, tiny_prm
from tests.trainer.fake_policy import FakePolicy
from trainer.config import (
    CorrectConfig,
    EvaluateConfig,
    ExecuteConfig,
    ExportConfig,
    FitConfig,
    GenerateConfig,
    LabelConfig,
)
from trainer.correct import run as correct_stage
from trainer.evaluate import run as evaluate_stage
from trainer.execute import run as execute_stage
from trainer.export import run as export_stage
from trainer.fit import build_examples, collate, fit, init_prm, prepare_trainable, weights_of
from trainer.fit import run as fit_stage
from trainer.generate import make_candidate
from trainer.generate import run as generate_stage
from trainer.label import run as label_stage
from trainer.records import StepLabel
from trainer.rundir import candidates_store, executed_candidates, label_table, select_split

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """generate → execute → label on 4 train, 3 meta, 3 dev problems (shared across tests)."""
    run = tmp_path_factory.mktemp("run")
    chosen = select_split(shared_data("leetcodedataset_train.jsonl"), {"train": 4, "meta": 3, "dev": 3})
    policy = FakePolicy([r.problem for r in chosen], p_bad=0.5)
    gen = GenerateConfig(model="fake", backend="transformers", n=3, seed=1)
    assert generate_stage(run, gen, chosen, references=True, policy=policy) == 40
    assert generate_stage(run, gen, chosen, references=True, policy=policy) == 0  # resumed: nothing to do
    assert execute_stage(run, ExecuteConfig(workers=2, wall_s=10)) == 40
    label_stage(run, LabelConfig(rollouts=2, workers=2), gen, policy=policy)
    return run


def test_candidates_have_steps_and_outcomes(run: Path) -> None:
    cands = executed_candidates(run)
    assert len(cands) == 40
    refs = [c for c in cands if c.provenance == "reference"]
    assert refs and all(c.exec and c.exec.passed for c in refs)
    assert any(c.exec and not c.exec.passed for c in cands)  # sabotaged ones fail
    assert all(c.steps and "".join(s.text for s in c.steps) == c.code for c in cands)


def test_labels_final_is_clean_and_prefixes_are_rollout_rates(run: Path) -> None:
    labels = label_table(run)
    cands = {(c.problem_id, c.candidate_id): c for c in executed_candidates(run, "train")}
    assert {(k[0], k[1]) for k in labels} == set(cands)  # only train candidates are labelled
    for (pid, cid, k), lb in labels.items():
        cand = cands[(pid, cid)]
        if k == len(cand.steps) - 1:
            assert lb.final and lb.mc_label == float(cand.exec.passed)  # type: ignore[union-attr]
        else:
            assert not lb.final and lb.n_rollouts == 2 and lb.mc_label == lb.n_pass / 2


def test_fit_correct_evaluate_export(run: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    fit_cfg = FitConfig(model=str(tiny_checkpoint), lr=5e-3, epochs=2, batch_size=4, grad_accum=1, lora_r=4)
    history = fit_stage(run, fit_cfg)
    assert all(torch.isfinite(torch.tensor(h.get("dev_loss", h.get("train_loss", 0.0)))) for h in history)
    fit_stage(run, fit_cfg, outcome_only=True)  # the ORM baseline
    assert json.loads((run / "orm" / "checkpoint" / "prm.json").read_text())["training"]["stage"] == "orm"
    losses = correct_stage(run, fit_cfg, CorrectConfig(iterations=4, batch_size=4, meta_batch_size=4, lr=5e-3))
    assert set(losses) == {"corrected", "uncorrected"}
    corrected = [json.loads(line) for line in (run / "correct" / "labels.jsonl").read_text().splitlines()]
    assert corrected and all(0.0 <= r["corrected"] <= 1.0 for r in corrected)
    report = evaluate_stage(run, EvaluateConfig(bootstrap=50, loglik_model=""), policy_name="fake-policy")
    assert report["n_problems"] == 3
    written = {p.name for p in (run / "evaluate").iterdir()}
    assert {"eval.json", "eval.md", "calibration.png", "best_of_n.png", "verify.json", "verify.md"} <= written
    verify = report["verify"][0]
    assert verify["reference"] == "longest" and {r["scorer"] for r in verify["rows"]} >= {
        "random", "oracle", "longest", "shortest", "prm_corrected/min", "prm_fit/min+context", "orm/last"}
    out = export_stage(run, ExportConfig(name="test-prm"), tmp_path / "exported")
    assert json.loads((out / "prm.json").read_text())["training"]["stage"] != "orm"  # a baseline, never shipped
    served = PRMModel.load(out, device="cpu", dtype="float32")
    assert served.name == "test-prm" and "Evaluation" in (out / "MODEL_CARD.md").read_text()
    rows = (run / "export" / "trl_prm.jsonl").read_text().splitlines()
    assert rows and set(json.loads(rows[0])) == {"prompt", "completions", "labels", "soft_labels"}
    for row in map(json.loads, rows):  # TRL's PRMTrainer does int(label): booleans, the MC rate beside them
        assert all(isinstance(b, bool) for b in row["labels"]) and len(row["soft_labels"]) == len(row["labels"])
        assert row["labels"] == [p >= 0.5 for p in row["soft_labels"]]


def test_resume_after_partial_generate(tmp_path: Path) -> None:
    chosen = select_split(shared_data("leetcodedataset_train.jsonl"), {"train": 3, "meta": 0, "dev": 0})
    policy = FakePolicy([r.problem for r in chosen])
    gen = GenerateConfig(model="fake", backend="transformers", n=2)
    generate_stage(tmp_path, gen, chosen[:1], references=False, policy=policy)
    generate_stage(tmp_path, gen, chosen, references=False, policy=policy)
    keys = [(c.problem_id, c.candidate_id) for c in candidates_store(tmp_path).read()]
    assert len(keys) == len(set(keys)) == 6


def test_export_round_trip_scores_equal_trainer_eval_mode(tmp_path: Path) -> None:
    """fit a tiny LoRA PRM → export → the service's PRMModel → the same scores as in training."""
    model = tiny_prm(seed=3)
    data = [json.loads(line) for line in shared_data("leetcodedataset_train.jsonl").read_text().splitlines()[:6]]
    from trainer.records import Problem

    problems = {d["id"]: Problem.model_validate(d) for d in data}
    cands = [make_candidate(p, "ref", p.canonical_solution or "", policy="ref", template="t")
             for p in problems.values()]
    labels = {(c.problem_id, c.candidate_id, s.index): StepLabel(problem_id=c.problem_id, candidate_id=c.candidate_id,
                                                                  step_index=s.index, mc_label=0.7, n_rollouts=2,
                                                                  n_pass=1, final=False)
              for c in cands for s in c.steps}
    examples, _ = build_examples(model.tokenizer, model.manifest.separator_token, problems, cands, labels,
                                 max_tokens=1024)
    cfg = FitConfig(model="tiny", lr=1e-2, epochs=1, batch_size=3, grad_accum=1, lora_r=4, bf16=False)
    network = prepare_trainable(model.network, cfg, model.separator_id)
    fit(network, examples, examples, cfg, pad_id=model.pad_id)
    network.eval()
    batch = collate(examples, model.pad_id)
    with torch.inference_mode():
        trained = network(**batch.inputs)[batch.positions[:, 0], batch.positions[:, 1]]
    export_checkpoint(network, model.tokenizer, tmp_path / "ckpt", name="rt", base_model=model.manifest.base_model,
                      max_tokens=1024, default_aggregation="min", training={}, metrics={}, card="# rt\n")
    served = PRMModel.load(tmp_path / "ckpt", device="cpu", dtype="float32")
    steps = {c.problem_id: [s.text for s in c.steps] for c in cands}
    got = [x for e in examples
           for x in served.forward([served.encode(problems[e.problem_id].prompt, steps[e.problem_id])])[0]]
    assert got == pytest.approx(trained.tolist(), abs=1e-4)


def test_adapter_checkpoints_warm_start_and_export(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA on a raw base model: fit → correct (warm start from fit) → export; every checkpoint holds only
    the adapter (no backbone), the service loads it on the hash-checked base with the trainer's scores."""
    base = save_tiny_lm(tmp_path / "base", seed=5)
    work = tmp_path / "run"
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("fit", "orm", "correct", "evaluate", "export"))
    fit_cfg = FitConfig(model=str(base), lr=5e-3, epochs=1, batch_size=4, grad_accum=1, lora_r=4, bf16=False)
    fit_stage(work, fit_cfg)
    fitted = work / "fit" / "checkpoint"
    assert read_manifest(fitted).weights == "adapter" and not (fitted / "backbone").exists()
    # warm start reproduces the fit model exactly before any correction step
    start = init_prm(str(base), max_tokens=fit_cfg.max_tokens, seed=0)
    load_added_rows_and_head(start, fitted)
    network = prepare_trainable(start.network, fit_cfg, start.separator_id).eval()
    load_lora(network, fitted)
    served_fit = PRMModel.load(fitted, device="cpu", dtype="float32")
    cand = executed_candidates(work, "dev")[0]
    problem = next(p for p in select_split(shared_data("leetcodedataset_train.jsonl"), {"dev": 3})
                   if p.problem.id == cand.problem_id).problem
    enc = served_fit.encode(problem.prompt, [s.text for s in cand.steps])
    with torch.inference_mode():
        warm = network(torch.tensor([enc.input_ids]))[0, enc.step_end_positions]
    assert served_fit.forward([enc])[0] == pytest.approx(warm.tolist(), abs=1e-4)

    correct_stage(work, fit_cfg, CorrectConfig(iterations=2, batch_size=2, meta_batch_size=2, lr=5e-3,
                                               warm_start=True))
    report = evaluate_stage(work, EvaluateConfig(bootstrap=20, loglik_model=str(base)), policy_name="fake-policy")
    assert report["verify"][0]["reference"] == "loglik"  # the untrained base model's likelihood row
    cached = sorted(p.name.split("-")[0] for p in (work / "evaluate" / "scores").iterdir())
    assert cached == ["loglik", "prm_corrected", "prm_fit", "prm_uncorrected"]

    def scored_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resumed evaluation scored a problem again")

    with monkeypatch.context() as patch:  # a rerun (as after a kill) reads every score from the cache
        patch.setattr(PRMModel, "forward", scored_again)
        patch.setattr("trainer.loglik.mean_loglik", scored_again)
        again = evaluate_stage(work, EvaluateConfig(bootstrap=20, loglik_model=str(base)), policy_name="fake-policy")
    assert again["verify"] == report["verify"]
    out = export_stage(work, ExportConfig(name="adapter-prm", scorer="prm_corrected"), tmp_path / "exported")
    assert {p.name for p in out.iterdir()} == {"prm.json", "adapter.safetensors", "head.safetensors", "MODEL_CARD.md",
                                               "best_of_n.png", "calibration.png"}
    served = PRMModel.load(out, device="cpu", dtype="float32")
    corrected = PRMModel.load(work / "correct" / "checkpoint", device="cpu", dtype="float32")
    assert served.name == "adapter-prm" and served.forward([enc]) == corrected.forward([enc])
    assert served.forward([enc]) != served_fit.forward([enc])  # correction trained on


def test_a_finished_fit_stage_goes_on_with_a_larger_step_budget(run: Path, tmp_path: Path) -> None:
    """The recipe's FIT_STEPS raised after a finished fit: the stage reruns from the state its step budget
    stopped it in, and its checkpoint equals that of one fit with the larger budget."""
    import dataclasses

    from trainer.resume import RESUME_FILE

    base = save_tiny_lm(tmp_path / "base", seed=5)
    cfg = FitConfig(model=str(base), lr=5e-3, epochs=2, batch_size=2, grad_accum=1, lora_r=4, bf16=False)
    checkpoints = {}
    for name, budgets in (("once", [3]), ("extended", [1, 3])):
        work = tmp_path / name
        shutil.copytree(run, work, ignore=shutil.ignore_patterns("fit", "orm", "correct", "evaluate", "export"))
        for steps in budgets:
            fit_stage(work, dataclasses.replace(cfg, max_steps=steps))
            assert (work / "fit" / RESUME_FILE).is_file()  # stopped by the budget: kept for a larger one
        checkpoints[name] = load_file(str(work / "fit" / "checkpoint" / "adapter.safetensors"))
    for key, value in checkpoints["once"].items():
        torch.testing.assert_close(checkpoints["extended"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    fit_stage(work, dataclasses.replace(cfg, max_steps=0))  # the epochs decide: nothing left to go on from
    assert not (work / "fit" / RESUME_FILE).exists()


def test_adapter_refuses_another_base(tmp_path: Path) -> None:
    base = save_tiny_lm(tmp_path / "base", seed=5, spare_rows=0)  # the separator grows the table, as for SmolLM2
    model = init_prm(str(base), max_tokens=256, seed=0)
    cfg = FitConfig(model=str(base), lora_r=4)
    network = prepare_trainable(model.network, cfg, model.separator_id).eval()
    with torch.no_grad():  # stand-in for training: every trainable tensor moves (LoRA B starts at zero)
        for p in network.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    enc = model.encode("Return 2.", ["def f():\n", "    return 1 + 1\n"])
    with torch.inference_mode():
        trained = network(torch.tensor([enc.input_ids]))[0, enc.step_end_positions].tolist()
    export_checkpoint(network, model.tokenizer, tmp_path / "ckpt", name="a", base_model=model.manifest.base_model,
                      max_tokens=256, default_aggregation="min", training={}, metrics={}, card="",
                      weights="adapter")
    served = PRMModel.load(tmp_path / "ckpt", device="cpu", dtype="float32")
    assert served.forward([enc])[0] == pytest.approx(trained, abs=1e-5)
    probe = served.manifest.probe  # recorded at export, reproduced by the reload
    assert probe is not None and served.forward([served.encode(probe.problem, probe.steps)])[0] == \
        pytest.approx(probe.logits, abs=1e-5)
    # bf16 weights, but the rotary frequencies stay fp32 (as from_pretrained(dtype=bf16) keeps them)
    half = PRMModel.load(tmp_path / "ckpt", device="cpu", dtype="bfloat16")
    assert next(half.network.backbone.parameters()).dtype == torch.bfloat16
    assert {b.dtype for n, b in half.network.backbone.named_buffers() if "inv_freq" in n} == {torch.float32}
    other = save_tiny_lm(tmp_path / "other", seed=6)
    with pytest.raises(InvalidInput, match="sha256"):
        PRMModel.load(tmp_path / "ckpt", device="cpu", dtype="float32", base=other)
    assert PRMModel.load(tmp_path / "ckpt", device="cpu", dtype="float32", base=base).name == "a"


def test_adapter_needs_a_local_hashable_base(tmp_path: Path) -> None:
    assert weights_of(FitConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct")) == "full"  # a hub id: no local file
    assert weights_of(FitConfig(model="smollm2")) == "adapter"
    assert weights_of(FitConfig(model="gemma3-270m")) == "adapter"
    assert weights_of(FitConfig(model="smollm2", lora=False)) == "full"
    with pytest.raises(InvalidInput, match="not a local file or directory"):
        base_sha256(tmp_path / "missing")
    spec = {"name": "a", "base_model": {"id": "x"}, "head": {"in_features": 4}, "weights": "adapter"}
    with pytest.raises(ValidationError, match="adapter"):
        PRMManifest.model_validate(spec)


def test_orm_examples_are_the_labelled_candidates_with_their_outcome_at_the_last_step(
        run: Path, tiny_checkpoint: Path) -> None:
    from trainer.fit import run_examples

    model = PRMModel.load(tiny_checkpoint, device="cpu", dtype="float32")
    steps, _, _ = run_examples(run, model, 512)
    orm, _, meta = run_examples(run, model, 512, outcome_only=True)
    cands = {(c.problem_id, c.candidate_id): c for c in executed_candidates(run, "train")}
    assert {(e.problem_id, e.candidate_id) for e in orm} == {(e.problem_id, e.candidate_id) for e in steps}
    for e in orm:
        assert len(e.positions) == 1 and e.labels == [float(cands[(e.problem_id, e.candidate_id)].exec.passed)]  # type: ignore[union-attr]
    assert any(len(e.positions) > 1 for e in steps) and meta
