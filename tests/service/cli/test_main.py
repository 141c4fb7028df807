"""The ``dreamprm`` command: split and local score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app

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


def test_serve_on_the_vllm_engine_refuses_our_own_format(tiny_checkpoint: Path) -> None:
    env = {"DREAMPRM_ENGINE": "vllm", "DREAMPRM_ENGINE_URL": "http://127.0.0.1:9"}
    out = RUNNER.invoke(app, ["serve", "--checkpoint", str(tiny_checkpoint)], env=env)
    assert out.exit_code == 2 and "--format hf" in out.output  # before binding the port, not in /health later


# --- every user error is one line on stderr and exit 2 (through main, as the `dreamprm` command runs) ---

def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from service.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def one_line_error(code: int, err: str) -> bool:
    return code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src, binary = tmp_path / "a.py", tmp_path / "b.py"
    src.write_text(CODE)
    binary.write_bytes(b"def f():\n    return '\xff\xfe'\n")
    cases = {
        ("split", str(tmp_path / "missing.py")): "source file",
        ("split", str(tmp_path)): "is a directory",
        ("split", str(binary)): "is not UTF-8 text",
        ("split", str(src), "--language", "cobol"): "--language 'cobol' is not one of python, javascript",
        ("score", str(src), "-p", "x", "--aggregation", "median"): "--aggregation 'median' is not one of min",
        ("score", str(src), "-p", f"@{tmp_path / 'nope.md'}"): "problem file",
        ("score", str(binary), "-p", "x"): "is not UTF-8 text",
        ("split", str(src), "--bogus"): "No such option: --bogus (see dreamprm split --help)",
        ("score", str(src)): "Missing option '--problem'",
        ("nope",): "No such command 'nope'",
        ("rerank", str(src), "-p", "x"): "needs a running service",
        ("rerank", str(src), "-p", "x", "--tests", str(tmp_path / "t.json"), "--server", "http://127.0.0.1:9"):
            "tests file",
    }
    for argv, expected in cases.items():
        code, out, err = run_main(list(argv), capsys)
        assert one_line_error(code, err) and expected in err, (argv, code, err)
        assert out == ""
    monkeypatch.setenv("DREAMPRM_MAX_WAIT_MS", "-1")
    code, _, err = run_main(["score", str(src), "-p", "x", "-c", str(tmp_path)], capsys)
    assert one_line_error(code, err) and "bad setting: max_wait_ms" in err, err


def test_bare_command_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([], capsys)
    assert code == 0 and "ci-rerank" in out
