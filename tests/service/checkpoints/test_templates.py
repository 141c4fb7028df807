"""The foreign formats' input templates against a character tokenizer (ids and read positions by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from service.checkpoints.templates import (
    AUTHORS_TEMPLATE,
    authors_texts,
    encode_rendered,
    encode_rows,
    encode_trl,
)
from service.errors import InputTooLong, InvalidInput

SEP = 1  # "<sep>" in the rendered templates


class Chars:
    """One token per character (code point + 10); "<sep>" is id 1; BOS 2 when ``bos``."""

    def __init__(self, bos: bool = False) -> None:
        self.bos_token_id = 2 if bos else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        out: list[int] = [2] if add_special_tokens and self.bos_token_id is not None else []
        for i, part in enumerate(text.split("<sep>")):
            out += ([SEP] if i else []) + [ord(c) + 10 for c in part]
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join("<sep>" if i == SEP else chr(i - 10) for i in ids if i != 2)


def test_trl_row_layout() -> None:
    tok = Chars(bos=True)
    enc = encode_trl(tok, "ab", ["x\n", "yz"], 100, separator="\n")
    assert enc.input_ids == [2, *tok.encode("ab", False), *tok.encode("x\n\n", False), *tok.encode("yz\n", False)]
    assert enc.step_end_positions == [5, 8] and enc.prefix_len == 3 and not enc.truncated


def test_trl_truncation_keeps_the_problem_tail_then_drops_steps() -> None:
    tok = Chars()
    enc = encode_trl(tok, "p" * 40 + "END", ["a" * 10, "b" * 10], 60)
    assert enc.truncated and tok.decode(enc.input_ids[: enc.prefix_len]).endswith("END")
    assert len(enc.input_ids) <= 60 and len(enc.step_end_positions) == 2
    short = encode_trl(tok, "p" * 40, ["a" * 10, "b" * 30], 50)
    assert short.truncated and len(short.step_end_positions) == 1
    with pytest.raises(InputTooLong):
        encode_trl(tok, "p", ["a" * 100], 50)
    with pytest.raises(InvalidInput):
        encode_trl(tok, "p", ["a"], 50, separator="")


def render(problem: str, steps: Sequence[str]) -> str:
    return f"[sys][user]{problem}[asst]" + "".join(s + "<sep>" for s in steps)


def test_rendered_positions_and_refusal_of_separators_in_text() -> None:
    tok = Chars()
    enc = encode_rendered(tok, render, "q", ["ab", "c"], 100, separator_id=SEP)
    assert [enc.input_ids[p] for p in enc.step_end_positions] == [SEP, SEP]
    assert enc.prefix_len == len(render("q", []))
    with pytest.raises(InvalidInput, match="separator"):
        encode_rendered(tok, render, "q<sep>", ["ab"], 100, separator_id=SEP)
    cut = encode_rendered(tok, render, "q" * 200, ["ab", "c" * 40], 80, separator_id=SEP)
    assert cut.truncated and len(cut.input_ids) <= 80


def test_rows_one_per_prefix_share_the_problem_tokens() -> None:
    tok = Chars()
    steps = ["def a():\n", "def b():\n"]
    texts = authors_texts("Sum.", steps)
    assert texts[1].endswith("<starter_code>\ndef a():\ndef b():\n\n</starter_code>")
    enc = encode_rows(tok, lambda p: authors_texts(p, steps), lambda p: AUTHORS_TEMPLATE.format(
        platform="", question_id="", title="", content=p, starter="").split("<starter_code>")[0], "Sum.", 2, 1000)
    assert [r.input_ids for r in enc.rows] == [tok.encode(t) for t in texts]
    assert enc.rows[0].prefix_len == enc.rows[1].prefix_len == len(tok.encode(texts[0].split("<starter_code>")[0]))
    assert [r.step_end_positions for r in enc.rows] == [[r.n_tokens - 1] for r in enc.rows]
    assert enc.n_tokens == sum(r.n_tokens for r in enc.rows)


def test_rows_read_the_last_non_pad_token_and_truncate() -> None:
    tok = Chars()
    pad = ord("!") + 10
    enc = encode_rows(tok, lambda p: [p + "x!!"], lambda p: p, "q", 1, 100, pad_id=pad, outcome=True)
    assert enc.outcome and enc.rows[0].step_end_positions == [1]
    rows = encode_rows(tok, lambda p: [p + "a" * 10, p + "a" * 30], lambda p: p, "q" * 5, 2, 20)
    assert rows.truncated and len(rows.rows) == 1
