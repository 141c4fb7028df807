"""PRMModel: one-pass scoring equals per-prefix scoring, batching, save/load, fail-fast loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from service.errors import InvalidInput
from service.model import PRMModel
from service.steps import split_steps
from tests.tiny import tiny_gemma3_prm

PROBLEM = "Given n, print the sum of the first n positive integers."
CODE = '''import sys


def main():
    """Read n and print the sum."""
    n = int(sys.stdin.readline())
    print(total(n))


def total(n):
    """Sum 1..n."""
    return n * (n + 1) // 2


def unused(xs):
    """Not called."""
    return [x for x in xs if x]


main()
'''


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> PRMModel:
    return PRMModel.load(tiny_checkpoint, device="cpu", dtype="float32")


def test_one_pass_equals_each_prefix_separately(model: PRMModel) -> None:
    steps = [s.text for s in split_steps(CODE)]
    assert len(steps) == 5
    one_pass = model.forward([model.encode(PROBLEM, steps)])[0]
    per_prefix = [model.forward([model.encode(PROBLEM, steps[:k])])[0][-1] for k in range(1, len(steps) + 1)]
    assert one_pass == pytest.approx(per_prefix, abs=1e-4)
    assert len(set(round(x, 6) for x in one_pass)) > 1  # a real model gives different step scores


def test_passes_respect_the_token_budget(model: PRMModel) -> None:
    steps = [s.text for s in split_steps(CODE)]
    items = [model.encode(PROBLEM * k, steps) for k in (1, 2, 3, 1, 5)]
    budget = model.pass_tokens = 2 * max(e.n_tokens for e in items)
    try:
        passes = model._passes(items)
    finally:
        model.pass_tokens = 1024
    assert sorted(i for p in passes for i in p) == list(range(5))
    assert all(len(p) * max(items[i].n_tokens for i in p) <= budget for p in passes)
    assert any(len(p) > 1 for p in passes)


def test_padded_batch_equals_single_items(model: PRMModel) -> None:
    steps = [s.text for s in split_steps(CODE)]
    items = [model.encode(PROBLEM, steps), model.encode("short", steps[:2]), model.encode(PROBLEM * 3, steps[1:])]
    batched = model.forward(items)
    for enc, got in zip(items, batched, strict=True):
        assert got == pytest.approx(model.forward([enc])[0], abs=1e-4)


@pytest.fixture(scope="module")
def gemma3() -> PRMModel:
    return tiny_gemma3_prm()


@pytest.mark.parametrize("pass_tokens", [None, 1, 700])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_shared_problem_prefix_equals_separate_passes(request: pytest.FixtureRequest, arch: str,
                                                      pass_tokens: int | None) -> None:
    """Candidates of one problem run the problem once (its KV cache reused), in passes of any size
    (one row each, several, all at once); scores must not change. Gemma 3: sliding-window layers whose
    window (16 tokens) is shorter than the problem, so its cache cannot simply be cut back."""
    model: PRMModel = request.getfixturevalue("model" if arch == "llama" else "gemma3")
    model.pass_tokens = pass_tokens
    steps = [s.text for s in split_steps(CODE)]
    cands = [steps, steps[:2], steps[1:4], [steps[0], "def other():\n    return 1\n"]]
    items = [model.encode(PROBLEM, c) for c in cands] + [model.encode("A different problem entirely.", steps)]
    assert len({tuple(e.input_ids[: e.prefix_len]) for e in items}) == 2
    shared = model.forward(items)
    model.share_prefix = False
    try:
        plain = model.forward(items)
        alone = [model.forward([e])[0] for e in items]
    finally:
        model.share_prefix, model.pass_tokens = True, 1024
    for got, want, one in zip(shared, plain, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-4) and got == pytest.approx(one, abs=1e-4)


def test_save_load_round_trip(model: PRMModel, tmp_path: Path) -> None:
    model.save(tmp_path / "copy")
    again = PRMModel.load(tmp_path / "copy", device="cpu", dtype="float32")
    enc = model.encode(PROBLEM, [s.text for s in split_steps(CODE)])
    assert again.forward([enc]) == model.forward([enc])
    assert len(again.revision) == 16 and again.revision != "unsaved"
    manifest = json.loads((tmp_path / "copy" / "prm.json").read_text())
    assert manifest["template"] == "dreamprm-cof-v1" and manifest["separator_token"] == "<|step|>"
    assert not list((tmp_path / "copy").rglob("*.bin")) and not list((tmp_path / "copy").rglob("*.pt"))


def test_bfloat16_scores_close_to_float32(model: PRMModel, tiny_checkpoint: Path) -> None:
    bf16 = PRMModel.load(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert next(bf16.network.backbone.parameters()).dtype == torch.bfloat16
    enc = model.encode(PROBLEM, [s.text for s in split_steps(CODE)])
    assert bf16.forward([enc])[0] == pytest.approx(model.forward([enc])[0], abs=0.05)


def test_load_fails_fast_on_broken_checkpoints(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"prm\.json is missing"):
        PRMModel.load(tmp_path, device="cpu")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    manifest = json.loads((bad / "prm.json").read_text())
    manifest["head"]["in_features"] = 7
    (bad / "prm.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="head expects 7 features"):
        PRMModel.load(bad, device="cpu")
    manifest["head"]["in_features"] = 32
    manifest["separator_token"] = "<|nope|>"
    (bad / "prm.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="special token"):
        PRMModel.load(bad, device="cpu")
    manifest["format_version"] = 99
    (bad / "prm.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="invalid"):
        PRMModel.load(bad, device="cpu")
