"""The ``dreamprm`` command: split and local score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

RUNNER = CliRunner()
CODE = "import os\n\ndef main():\n    return helper()\n\ndef helper():\n    return 2\n"


def test_split_table_and_json(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text(CODE)
    out = RUNNER.invoke(app, ["split", str(src)])
    assert out.exit_code == 0 and "helper" in out.output and "parsed: True" in out.output
    out = RUNNER.invoke(app, ["split", str(src), "--json"])
    data = json.loads(out.output)
    assert [s["name"] for s in data["steps"]] == ["preamble", "main", "helper"]


def test_split_bad_input_exits_2(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text("# nothing\n")
    out = RUNNER.invoke(app, ["split", str(src)])
    assert out.exit_code == 2 and "no statements" in out.output


def test_score_with_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text(CODE)
    problem = tmp_path / "problem.md"
    problem.write_text("Return two.")
    out = RUNNER.invoke(app, ["score", str(src), "--problem", f"@{problem}", "--checkpoint",
                              str(tiny_checkpoint), "--json"])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert len(body["steps"]) == 3 and 0.0 <= body["score"] <= 1.0
    out = RUNNER.invoke(app, ["score", str(src), "-p", "Return two.", "-c", str(tiny_checkpoint),
                              "--aggregation", "last"])
    assert out.exit_code == 0 and "score (last):" in out.output


def test_serve_without_checkpoint_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.settings

    # outside a checkout (no default checkpoint beside the package) and with nothing configured
    monkeypatch.setattr(service.settings, "DEFAULT_CHECKPOINT", tmp_path / "absent")
    out = RUNNER.invoke(app, ["serve"], env={"DREAMPRM_CHECKPOINT": ""})
    assert out.exit_code == 2 and "no checkpoint" in out.output
    out = RUNNER.invoke(app, ["serve", "--checkpoint", str(tmp_path)])
    assert out.exit_code == 2 and "not a checkpoint of a format we accept" in out.output and "prm.json" in out.output
