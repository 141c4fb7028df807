"""The CLI's user-facing pieces: the ci-rerank verdict, choices, reading inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from service.cli.console import choice, ci_verdict, read_text, waiting
from service.schemas import RankedCandidate, TestOutcome


def ranked(score: float | None, tests_passed: bool | None = None, n_passed: int = 0) -> RankedCandidate:
    tests = None if tests_passed is None else TestOutcome(passed=tests_passed, n_tests=3, n_passed=n_passed,
                                                          status="passed" if tests_passed else "wrong_answer")
    return RankedCandidate(index=0, rank=0, source="given", code="x = 1\n", score=score, aggregate=None, steps=[],
                           tests_passed=tests_passed, tests=tests, error=None if score is not None else "too long")


@pytest.mark.parametrize(("best", "threshold", "tests", "code", "start"), [
    (ranked(0.01), None, False, 0, "rank only"),
    (ranked(0.01), 0.5, False, 1, "FAIL (score): best candidate fix.diff: score 0.0100 < --threshold 0.5"),
    (ranked(0.7), 0.5, False, 0, "OK: best candidate fix.diff: score 0.7000 >= --threshold 0.5"),
    (ranked(0.7, False, 1), None, True, 1, "FAIL (tests): best candidate fix.diff: fails the public tests (1 of 3"),
    (ranked(0.1, False, 1), 0.5, True, 1, "FAIL (score, tests)"),
    (ranked(0.7, True, 3), 0.5, True, 0, "OK: best candidate fix.diff: score 0.7000 >= --threshold 0.5; passes"),
    (ranked(None), None, False, 1, "FAIL: no candidate could be scored (too long)"),
    (None, 0.5, True, 1, "FAIL: no candidate could be scored"),
])
def test_ci_verdict_names_the_failed_condition(best: RankedCandidate | None, threshold: float | None, tests: bool,
                                               code: int, start: str) -> None:
    verdict = ci_verdict(best, "fix.diff", threshold=threshold, tests_given=tests)
    assert verdict.exit_code == code and verdict.message.startswith(start), verdict.message


def test_choice_and_read_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert choice("min", ["min", "mean"], "--aggregation") == "min"
    assert choice(None, ["min"], "--aggregation") is None
    with pytest.raises(typer.Exit) as info:
        choice("max", ["min", "mean"], "--aggregation")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "error: --aggregation 'max' is not one of min, mean\n"
    (tmp_path / "ok.py").write_text("é = 1\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.py") == "é = 1\n"


def test_waiting_is_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with waiting("ranking"):
        pass
    assert capsys.readouterr().err == ""
