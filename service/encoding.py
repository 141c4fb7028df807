"""Step encoding (DESIGN §3): the one function that turns (problem, steps) into model input.

Shared by the trainer (labels go at ``step_end_positions``) and the service (scores are read
there). Pure: stdlib only; the tokenizer is any object with ``encode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.errors import InvalidInput, over_limit

TEMPLATE_ID = "dreamprm-cof-v1"
STEP_SEPARATOR = "<|step|>"
PROBLEM_HEADER = "Problem:\n"
SOLUTION_HEADER = "\n\nSolution:\n"
ELISION = "\n[...]\n"
MIN_PROBLEM_TOKENS = 32


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def convert_tokens_to_ids(self, tokens: str) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """Model input for one candidate.

    ``step_end_positions[k]`` is the index in ``input_ids`` of the separator after step k; only
    the first ``len(step_end_positions)`` steps fit the budget (the rest are unscored).
    """

    input_ids: list[int]
    step_end_positions: list[int]
    truncated: bool
    n_steps: int
    prefix_len: int = 0  # tokens before the first step (the problem): equal for candidates of one problem

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def separator_id(tokenizer: Tokenizer, token: str = STEP_SEPARATOR) -> int:
    """The id of the step separator; fails fast if the tokenizer does not know it."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or ids != [tid]:
        raise InvalidInput(f"tokenizer has no special token {token!r}")
    return tid


def encode_steps(tokenizer: Tokenizer, problem: str, steps: Sequence[str], max_tokens: int,
                 *, separator: str = STEP_SEPARATOR) -> Encoded:
    """Encode ``problem`` and the step texts with a separator token after every step.

    A causal model sees only the tokens before each separator, so one forward pass scores every
    prefix. When the input is longer than ``max_tokens`` the problem statement is cut first
    (keeping its head and tail, at least ``MIN_PROBLEM_TOKENS``); steps that still do not fit are
    left unscored. The code itself is never cut.

    Example:
        >>> enc = encode_steps(tok, "Add two numbers.", ["def main():\\n", "def add(a, b):\\n"], 512)
        >>> [enc.input_ids[p] for p in enc.step_end_positions] == [sep_id, sep_id]
        True

    Raises:
        InputTooLong: not even the first step fits in ``max_tokens``.
    """
    if not steps:
        raise InvalidInput("no steps to score")
    sep = separator_id(tokenizer, separator)
    head = tokenizer.encode(PROBLEM_HEADER, add_special_tokens=False)
    tail = tokenizer.encode(SOLUTION_HEADER, add_special_tokens=False)
    problem_ids = tokenizer.encode(problem, add_special_tokens=False)
    step_ids = [[*tokenizer.encode(text, add_special_tokens=False), sep] for text in steps]
    code_len = sum(len(ids) for ids in step_ids)
    room = max_tokens - len(head) - len(tail) - code_len
    truncated = len(problem_ids) > room
    if truncated:
        keep = max(room, min(len(problem_ids), MIN_PROBLEM_TOKENS))
        problem_ids = _elide(tokenizer, problem_ids, keep)
    need = len(head) + len(tail) + min(len(problem_ids), MIN_PROBLEM_TOKENS)
    return append_steps(head + problem_ids + tail, step_ids, max_tokens, truncated=truncated, need=need)


def append_steps(prefix: list[int], step_ids: Sequence[list[int]], max_tokens: int, *, truncated: bool,
                 need: int) -> Encoded:
    """``prefix`` then each step's tokens (separator included) while they fit ``max_tokens``; a step's score is
    read at its last token. Shared by every template (ours and the foreign formats' in ``service.checkpoints``).

    Raises:
        InputTooLong: not even the first step fits (``need``: the tokens the prefix needs at least).
    """
    input_ids = list(prefix)
    positions: list[int] = []
    for ids in step_ids:
        if len(input_ids) + len(ids) > max_tokens:
            truncated = True
            break
        input_ids += ids
        positions.append(len(input_ids) - 1)
    if not positions:
        raise over_limit(need + len(step_ids[0]), max_tokens, "the first step alone needs about {n} tokens")
    return Encoded(input_ids, positions, truncated, len(step_ids), len(prefix))


def _elide(tokenizer: Tokenizer, ids: list[int], keep: int) -> list[int]:
    """Keep the head (2/3) and tail (1/3) of ``ids`` within ``keep`` tokens, marking the cut."""
    if len(ids) <= keep:
        return ids
    mark = tokenizer.encode(ELISION, add_special_tokens=False)
    keep = max(keep - len(mark), 2)
    n_tail = keep // 3
    return ids[: keep - n_tail] + mark + (ids[-n_tail:] if n_tail else [])
