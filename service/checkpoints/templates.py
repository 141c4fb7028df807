"""The input template of each foreign checkpoint format: (problem, steps) -> token ids and score positions.

Pure: stdlib and ``service`` only; the tokenizer is any object with ``encode``/``decode`` (and, for chat
templates, a ``render`` callable the model module passes in). Our own template is ``service.encoding``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.encoding import ELISION, MIN_PROBLEM_TOKENS, Encoded, append_steps
from service.errors import InvalidInput, check_limit, over_limit

TRL_TEMPLATE = "trl-prm"
QWEN_PRM_TEMPLATE = "qwen2.5-math-prm"
AUTHORS_TEMPLATE_ID = "dreamprm-code-authors"
QWEN_PRM_SEPARATOR = "<extra_0>"
# The system prompt Qwen2.5-Math-PRM was trained and documented with.
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# The authors' template (their training script's, field for field): the code prefix goes in <starter_code>.
AUTHORS_TEMPLATE = ("<task>\nPlatform: {platform}\nQuestion ID: {question_id}\nTitle: {title}\n</task>\n\n"
                    "<problem>\n{content}\n</problem>\n\n<starter_code>\n{starter}\n</starter_code>")

Render = Callable[[str, Sequence[str]], str]  # (problem, steps) -> the whole input text


class TextTokenizer(Protocol):
    bos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class RowsEncoded(Encoded):
    """An item scored as several sequences (one per step prefix, or one for the whole program), each read
    at its last token. ``outcome``: one score for the whole program (an ORM without prefix scores)."""

    rows: tuple[Encoded, ...] = ()
    outcome: bool = False

    @property
    def n_tokens(self) -> int:
        return sum(r.n_tokens for r in self.rows)


def encode_trl(tok: TextTokenizer, problem: str, steps: Sequence[str], max_tokens: int, *,
               separator: str = "\n") -> Encoded:
    """TRL ``PRMTrainer.tokenize_row``'s input: BOS (if any) + the problem's tokens + for every step its
    tokens followed by the separator's; step k is read at the last token of its separator.

    Too long: the problem keeps its last tokens (TRL's ``max_prompt_length`` rule, at least
    ``MIN_PROBLEM_TOKENS``), then steps beyond ``max_tokens`` are unscored.
    """
    if not steps:
        raise InvalidInput("no steps to score")
    sep = tok.encode(separator, add_special_tokens=False)
    if not sep:
        raise InvalidInput(f"step separator {separator!r} encodes to no tokens")
    bos = [] if tok.bos_token_id is None else [int(tok.bos_token_id)]
    prompt = tok.encode(problem, add_special_tokens=False)
    step_ids = [[*tok.encode(text, add_special_tokens=False), *sep] for text in steps]
    room = max_tokens - len(bos) - sum(len(s) for s in step_ids)
    truncated = len(prompt) > room
    if truncated:
        keep = max(room, min(len(prompt), MIN_PROBLEM_TOKENS))
        prompt = prompt[len(prompt) - keep:] if keep > 0 else []
    return append_steps(bos + prompt, step_ids, max_tokens, truncated=truncated, need=len(bos))


def encode_rendered(tok: TextTokenizer, render: Render, problem: str, steps: Sequence[str], max_tokens: int, *,
                    separator_id: int) -> Encoded:
    """A chat-rendered input with a separator token after every step (Qwen2.5-Math-PRM): step k is read at the
    k-th ``separator_id``. Too long: the problem is cut (head and tail), then trailing steps are unscored."""
    if not steps:
        raise InvalidInput("no steps to score")
    truncated = False
    ids = tok.encode(render(problem, steps))
    if len(ids) > max_tokens:
        truncated = True
        problem = shorten(tok, problem, len(ids) - max_tokens)
        ids = tok.encode(render(problem, steps))
    kept = len(steps)
    while len(ids) > max_tokens and kept > 1:
        kept -= 1
        ids = tok.encode(render(problem, steps[:kept]))
    check_limit(len(ids), max_tokens, "the first step alone needs {n} tokens")
    positions = [i for i, t in enumerate(ids) if t == separator_id]
    if len(positions) != kept:
        raise InvalidInput(f"the input has {len(positions)} step separators for {kept} steps: the problem or a "
                           "step contains the separator token's text")
    prefix = common_prefix(ids, tok.encode(render(problem, [])))
    return Encoded(ids, positions, truncated, len(steps), prefix)


def encode_rows(tok: TextTokenizer, build: Callable[[str], list[str]], head: Callable[[str], str], problem: str,
                n_steps: int, max_tokens: int, *, add_special_tokens: bool = True, outcome: bool = False,
                pad_id: int | None = None) -> RowsEncoded:
    """One sequence per text of ``build(problem)`` (a prefix of the program each, or the whole program), scored
    at its last token. ``head(problem)`` is the text before the code: the tokens it shares with a row are that
    row's prefix, run once for all the rows of the problem (the shared KV cache). Too long: the problem is cut
    (head and tail), then rows beyond ``max_tokens`` are unscored. A row is read at its last token that is not
    ``pad_id`` (transformers' sequence-classification rule)."""
    truncated = False
    rows = [tok.encode(t, add_special_tokens=add_special_tokens) for t in build(problem)]
    longest = max(len(r) for r in rows)
    if longest > max_tokens:
        truncated = True
        problem = shorten(tok, problem, longest - max_tokens)
        rows = [tok.encode(t, add_special_tokens=add_special_tokens) for t in build(problem)]
    kept: list[list[int]] = []
    for r in rows:  # rows grow with the prefix: the first that does not fit ends the scored ones
        if len(r) > max_tokens:
            break
        kept.append(r)
    if not kept:
        raise over_limit(len(rows[0]), max_tokens, "the first step alone needs {n} tokens")
    head_ids = tok.encode(head(problem), add_special_tokens=add_special_tokens)
    encoded = tuple(Encoded(r, [_last_read(r, pad_id)], False, 1, min(common_prefix(r, head_ids), len(r) - 1))
                    for r in kept)
    return RowsEncoded([], [len(r) - 1 for r in kept], truncated or len(kept) < len(rows), n_steps, 0,
                       rows=encoded, outcome=outcome)


def _last_read(ids: Sequence[int], pad_id: int | None) -> int:
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] != pad_id:
            return i
    return len(ids) - 1


def authors_texts(problem: str, steps: Sequence[str], *, platform: str = "", question_id: str = "",
                  title: str = "") -> list[str]:
    """The authors' text of every code prefix: prefix k = steps 0..k concatenated (the program so far)."""
    out, code = [], ""
    for step in steps:
        code += step
        out.append(AUTHORS_TEMPLATE.format(platform=platform, question_id=question_id, title=title,
                                           content=problem, starter=code))
    return out


def shorten(tok: TextTokenizer, problem: str, over: int) -> str:
    """``problem`` with about ``over`` tokens cut from its middle (head 2/3, tail 1/3 kept, marked)."""
    ids = tok.encode(problem, add_special_tokens=False)
    keep = max(len(ids) - over - len(tok.encode(ELISION, add_special_tokens=False)), 0)
    keep = max(keep, min(len(ids), MIN_PROBLEM_TOKENS))
    if keep >= len(ids):
        return problem
    tail = keep // 3
    return tok.decode(ids[: keep - tail]) + ELISION + (tok.decode(ids[-tail:]) if tail else "")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
