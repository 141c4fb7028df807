"""``python -m trainer``: one-line errors with exit 2, ``--allow-changed`` on resume, export's missing source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shared_data
from trainer.__main__ import main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def empty_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "generate").mkdir(parents=True)
    (run / "generate" / "candidates.jsonl").write_text("")
    (run / "problems.jsonl").write_text("")
    return run


def test_a_changed_setting_stops_the_stage_until_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = empty_run(tmp_path)
    assert run_main(["execute", str(run), "--set", "execute.wall_s=5"], capsys)[0] == 0
    code, _, err = run_main(["execute", str(run), "--set", "execute.wall_s=7"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "wall_s: 5.0 -> 7" in err and "--allow-changed" in err
    assert run_main(["execute", str(run), "--allow-changed"], capsys)[0] == 0
    assert json.loads((run / "execute" / "run.json").read_text())["config"]["wall_s"] == 7


def test_export_without_its_checkpoint_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = empty_run(tmp_path)
    code, _, err = run_main(["export", str(run), str(tmp_path / "out")], capsys)  # scorer auto: nothing trained
    assert code == 2 and err.count("\n") == 1 and f"python -m trainer fit {run}" in err
    named = ["--set", "export.scorer=prm_corrected"]
    code, _, err = run_main(["export", str(run), str(tmp_path / "out"), *named], capsys)
    assert code == 2 and err.count("\n") == 1 and f"python -m trainer correct {run}" in err
    assert not (run / "export" / "run.json").exists()  # no attempt recorded: changing the scorer stays allowed
    (run / "fit" / "checkpoint").mkdir(parents=True)
    (run / "fit" / "checkpoint" / "prm.json").write_text("{}")
    code, _, err = run_main(["export", str(run), str(tmp_path / "out"), *named, "--allow-changed"], capsys)
    assert code == 2 and "--set export.scorer=prm_fit" in err


@pytest.mark.parametrize("argv", [["nope"], ["execute", "RUN", "--set", "bogus"], ["execute"],
                                  ["generate", "RUN", "--set", "generate.model=x", "--set", "generate.n=-1"],
                                  ["label", "RUN", "--set", "label.rollouts=0"]])
def test_usage_errors_are_one_line(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main([a.replace("RUN", str(tmp_path / "run")) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err


def test_an_unreachable_policy_is_one_line_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared_data("leetcodedataset_train.jsonl")
    code, _, err = run_main(["generate", str(tmp_path / "run"), "--data", str(data), "--problems",
                             "train=1,meta=0,dev=0", "--set", "generate.model=m", "--set", "generate.retries=0",
                             "--set", "generate.base_url=http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "generate.backend=transformers" in err


def test_references_and_mutants_need_no_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """generate.n=0 adds only references and mutants; label.rollouts=0 labels them by the reference's
    continuation alone: exact, and no policy server is asked (none is configured)."""
    data, run = shared_data("leetcodedataset_train.jsonl"), str(tmp_path / "run")
    code, _, err = run_main(["generate", run, "--data", str(data), "--problems", "train=3,meta=0,dev=0",
                               "--references", "--mutants", "2", "--set", "generate.model=none",
                               "--set", "generate.n=0"], capsys)
    assert code == 0, err
    assert run_main(["execute", run], capsys)[0] == 0
    code, _, err = run_main(["label", run, "--set", "label.rollouts=0", "--set", "label.reference_rollouts=1"],
                            capsys)
    assert code == 0, err
    cands = {(c["problem_id"], c["candidate_id"]): c
             for c in map(json.loads, open(f"{run}/generate/candidates.jsonl"))}
    passed = {(e["problem_id"], e["candidate_id"]): e["exec"]["passed"]
              for e in map(json.loads, open(f"{run}/execute/exec.jsonl"))}
    assert {c["provenance"] for c in cands.values()} == {"reference", "mutant"}
    labels: dict[tuple[str, str], list[float]] = {}
    for lb in map(json.loads, open(f"{run}/label/labels.jsonl")):
        labels.setdefault((lb["problem_id"], lb["candidate_id"]), []).append(lb["mc_label"])
    assert set(labels) == set(cands)
    for key, values in labels.items():
        assert set(values) <= {0.0, 1.0}  # deterministic: one continuation, exact
        assert values[-1] == float(passed[key])
        if cands[key]["provenance"] == "reference":
            assert values == [1.0] * len(values)
        elif not passed[key]:  # a killed mutant: right until its mutated step, wrong from there on
            assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("stage", ["generate", "execute", "label", "fit", "correct", "evaluate", "export"])
def test_help_lists_every_setting_of_the_stage(stage: str, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from trainer.__main__ import SECTIONS

    monkeypatch.setenv("COLUMNS", "400")  # one setting per line
    code, out, _ = run_main([stage, "--help"], capsys)
    assert code == 0
    for f in dataclasses.fields(SECTIONS[stage]):
        help_text = f.metadata.get("help", "")
        assert f"{stage}.{f.name}: {help_text}" in " ".join(out.split()), f.name
