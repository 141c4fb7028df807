"""Real models' candidate pools in a run (trainer.pools, import_pools, outcome labels, the verifier report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import DataLeakError
from trainer.label import outcome_labels
from trainer.pools import import_pools, load_pools, pool_candidates, read_pool
from trainer.records import ExecSummary
from trainer.rundir import candidates_store, problems_store
from trainer.verify import prm_scores, sections


def _pool(tmp_path: Path, n: int = 30) -> Path:
    folder = tmp_path / "candidates"
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        code = f"def f(x):\n    return x + {i}\n"
        rows.append({"id": f"mbpp/{i}", "source": "mbpp", "prompt": f"Return x + {i}.", "entry_point": "f",
                     "test_type": "functional",
                     "tests": [{"type": "assert", "code": f"assert f(1) == {1 + i}\n"}], "label_source": "execution",
                     "candidates": [{"code": code, "passed": True, "model": "gpt-4", "method": "Direct"},
                                    {"code": code, "passed": True, "model": "gpt-4", "method": "Direct"},
                                    {"code": "def f(x):\n    return x\n", "passed": False, "model": "qwen",
                                     "method": "CoT"}]})
    path = folder / "tiny_pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_pools_splits_by_hash_and_dedups(tmp_path: Path) -> None:
    path = _pool(tmp_path)
    loaded = load_pools([path])
    parts = {p.id: part for part, p, _ in loaded}
    assert len(parts) == 30 and set(parts.values()) <= {"train", "meta", "dev"}
    assert load_pools([path]) == loaded  # deterministic
    _, problem, cands = loaded[0]
    assert len(cands) == 2  # the repeated (model, method, code) is kept once
    assert {c.model for c in cands} == {"gpt-4", "qwen"} and all(c.provenance == "pool" for c in cands)
    assert problem.private_tests and not problem.public_tests
    assert {part for part, _, _ in load_pools([path], eval_only=True)} == {"dev"}


def test_only_the_shared_candidate_pools_may_feed_training(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.jsonl"
    other.write_text(_pool(tmp_path).read_text())
    with pytest.raises(DataLeakError):
        load_pools([other])


def test_import_is_idempotent_and_keeps_dev_out_of_training(tmp_path: Path) -> None:
    path = _pool(tmp_path)
    run = tmp_path / "run"
    assert import_pools(run, [path]) == 60
    assert import_pools(run, [path]) == 0
    assert len(list(problems_store(run).read())) == 30 and len(list(candidates_store(run).read())) == 60
    with pytest.raises(DataLeakError):  # the same problems as dev-only would leak train problems into dev
        import_pools(run, [], eval_pools=[path])


def test_outcome_labels_and_verifier_rows(tmp_path: Path) -> None:
    row = read_pool(_pool(tmp_path, 1))[0]
    cands = list(pool_candidates(row, row.problem()))
    graded = [c.model_copy(update={"exec": ExecSummary(passed=c.model == "gpt-4", n_tests=1,
                                                       n_passed=int(c.model == "gpt-4"), error_kind="passed",
                                                       seconds=0.1)}) for c in cands]
    labels = outcome_labels(graded[0])
    assert [lb.mc_label for lb in labels] == [1.0] * len(graded[0].steps) and labels[-1].final
    assert sections(graded)["pools, within one model"] == ([0, 1], True)
    rows = prm_scores("prm", [[0.0], [1.0]], graded)
    assert rows["prm/min"][1] > rows["prm/min"][0] and "prm/min+context" in rows


def test_a_larger_dev_fraction_keeps_every_dev_problem_in_dev(tmp_path: Path) -> None:
    path = _pool(tmp_path, n=60)
    small = {p.id: part for part, p, _ in load_pools([path])}
    half = {p.id: part for part, p, _ in load_pools([path], dev_fraction=0.5)}
    assert {i for i, part in small.items() if part == "dev"} <= {i for i, part in half.items() if part == "dev"}
    assert 18 <= sum(part == "dev" for part in half.values()) <= 42  # about half of 60
    run = tmp_path / "run"
    import_pools(run, [path], dev_fraction=0.5)
    assert {r.problem.id: r.part for r in problems_store(run).read()} == half
