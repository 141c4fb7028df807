"""encode_steps with a character tokenizer: separator placement, prefixes, truncation."""

from __future__ import annotations

import pytest

from service.encoding import ELISION, MIN_PROBLEM_TOKENS, PROBLEM_HEADER, SOLUTION_HEADER, encode_steps
from service.errors import InputTooLong, InvalidInput
from tests.fakes import SEP_ID, CharTokenizer

TOK = CharTokenizer()


def decode(ids: list[int]) -> str:
    return "".join("|" if i == SEP_ID else chr(i - 2) for i in ids)


def test_layout_and_positions() -> None:
    enc = encode_steps(TOK, "Add.", ["def main():\n", "def add():\n"], 1000)
    assert decode(enc.input_ids) == f"{PROBLEM_HEADER}Add.{SOLUTION_HEADER}def main():\n|def add():\n|"
    assert all(enc.input_ids[p] == SEP_ID for p in enc.step_end_positions)
    assert enc.step_end_positions[-1] == len(enc.input_ids) - 1
    assert (enc.truncated, enc.n_steps, enc.n_tokens) == (False, 2, len(enc.input_ids))


def test_prefix_encoding_is_a_prefix() -> None:
    """What makes one pass equal to K passes: step k's input is the whole prefix up to it."""
    steps = ["import os\n", "def a():\n    pass\n", "def b():\n    return 1\n"]
    full = encode_steps(TOK, "P", steps, 1000)
    for k in range(1, len(steps) + 1):
        part = encode_steps(TOK, "P", steps[:k], 1000)
        assert part.input_ids == full.input_ids[: full.step_end_positions[k - 1] + 1]
        assert part.step_end_positions == full.step_end_positions[:k]


def test_long_problem_is_cut_in_the_middle_never_the_code() -> None:
    problem = "H" * 300 + "M" * 300 + "T" * 300
    steps = ["def main():\n    pass\n", "def f():\n    return 2\n"]
    enc = encode_steps(TOK, problem, steps, 200)
    text = decode(enc.input_ids)
    assert enc.truncated and enc.n_tokens <= 200
    assert text.endswith("".join(s + "|" for s in steps))  # code intact
    assert ELISION in text and "HHH" in text and "TTT" in text and "M" not in text


def test_steps_past_the_budget_are_unscored() -> None:
    steps = [f"def s{i}():\n    return 0\n" for i in range(20)]
    enc = encode_steps(TOK, "problem " * 20, steps, 150)
    assert enc.truncated
    assert 0 < len(enc.step_end_positions) < 20
    assert enc.n_tokens <= 150
    head = len(PROBLEM_HEADER) + len(SOLUTION_HEADER)
    assert enc.step_end_positions[0] >= head + MIN_PROBLEM_TOKENS  # problem kept at its minimum


def test_first_step_too_long_is_an_error() -> None:
    with pytest.raises(InputTooLong, match="first step"):
        encode_steps(TOK, "p", ["x" * 500], 100)


def test_missing_separator_fails_fast() -> None:
    class NoSep(CharTokenizer):
        def convert_tokens_to_ids(self, tokens: str) -> int | None:
            return None

    with pytest.raises(InvalidInput, match="special token"):
        encode_steps(NoSep(), "p", ["x"], 100)
