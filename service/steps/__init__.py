"""Function-as-step splitting (DESIGN §2) and fenced-code extraction from LLM replies.

Pure: imports only the stdlib and ``service.errors`` (tree-sitter, for languages other than
Python, is imported lazily by ``service.steps.treesitter``). The step texts of a split always
concatenate back to the input, byte for byte. The records live in ``service.steps.records``, Python's
anchors in ``service.steps.python``; both splitters feed ``assemble_steps`` here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import pairwise

from service.errors import InvalidInput
from service.steps.python import carries_logic, parse_python, python_anchors
from service.steps.records import LANGUAGES, MODULE_KINDS, NEWLINE, Anchor, Language, SplitResult, Step, StepKind

__all__ = ["LANGUAGES", "MODULE_KINDS", "Anchor", "Language", "SplitResult", "Step", "StepKind", "assemble_steps",
           "carries_logic", "extract_code", "parse_python", "split_code", "split_steps", "steps_from_texts"]


def split_steps(code: str, language: str = "python") -> list[Step]:
    """Split ``code`` into function steps.

    Example:
        >>> [s.name for s in split_steps("import x\\n\\ndef main():\\n    helper()\\n\\n"
        ...                              "def helper():\\n    pass\\n")]
        ['preamble', 'main', 'helper']
    """
    return split_code(code, language).steps


def split_code(code: str, language: str = "python") -> SplitResult:
    """Split ``code`` into steps and say whether a real parser was used.

    Raises:
        InvalidInput: empty code, code with no statements, NUL bytes, an unknown language, or
            nesting too deep for the parser.
    """
    if language not in LANGUAGES:
        raise InvalidInput(f"unknown language {language!r}; supported: {', '.join(LANGUAGES)}")
    if "\x00" in code:
        raise InvalidInput("code contains NUL bytes")
    if not code.strip():
        raise InvalidInput("code is empty")
    lines = _line_starts(code)
    if language == "python":
        anchors, parsed = python_anchors(code)
        steps = assemble_steps(code, lines, anchors, logic=carries_logic)
    else:
        from service.steps.treesitter import treesitter_anchors

        anchors, parsed = treesitter_anchors(code, language, len(lines))
        steps = assemble_steps(code, lines, anchors)
    return SplitResult(steps, parsed)


def _line_starts(code: str) -> list[int]:
    """Character offset of the start of every line (a trailing newline opens no new line)."""
    starts = [0]
    starts.extend(m.end() for m in NEWLINE.finditer(code) if m.end() < len(code))
    return starts


def assemble_steps(code: str, line_starts: Sequence[int], anchors: Sequence[Anchor],
                   logic: Callable[[str], bool] | None = None) -> list[Step]:
    """Cut ``code`` at anchor lines into steps that concatenate back to ``code``.

    A step runs from its first line up to the next step's first line, so code between two
    functions stays with the earlier one; code before the first function is the ``preamble`` and
    code after the last one the ``epilogue``. Whitespace-only edges join their neighbour. A preamble or
    epilogue is ``context`` unless ``logic(text)`` says it computes something (without ``logic``: always).
    """
    n_lines = len(line_starts)
    kept: list[Anchor] = []
    for a in sorted(anchors, key=lambda a: a.first_line):
        if not kept or a.first_line > kept[-1].last_line:  # overlapping anchors: keep the outer
            kept.append(a)
    # (kind, name, first line, line after the last) for every piece, in order
    pieces: list[tuple[StepKind, str, int, int]] = []
    if not kept:
        pieces.append(("preamble", "preamble", 0, n_lines))
    else:
        if kept[0].first_line > 0:
            pieces.append(("preamble", "preamble", 0, kept[0].first_line))
        for a, nxt in pairwise(kept):
            pieces.append((a.kind, a.name, a.first_line, nxt.first_line))
        last = kept[-1]
        end = min(last.last_line + 1, n_lines)
        pieces.append((last.kind, last.name, last.first_line, end))
        if end < n_lines:
            pieces.append(("epilogue", "epilogue", end, n_lines))

    def char_at(line: int) -> int:
        return line_starts[line] if line < n_lines else len(code)

    spans = [(kind, name, char_at(a), char_at(b), a, b) for kind, name, a, b in pieces]
    spans = _merge_blank_edges(code, spans)
    steps: list[Step] = []
    byte = 0
    for kind, name, c0, c1, l0, l1 in spans:
        text = code[c0:c1]
        size = len(text.encode("utf-8", "surrogatepass"))
        context = kind in MODULE_KINDS and not (logic and logic(text))
        steps.append(Step(len(steps), kind, name, l0 + 1, max(l0 + 1, l1), byte, byte + size, text, context))
        byte += size
    return steps


_Span = tuple[StepKind, str, int, int, int, int]


def _merge_blank_edges(code: str, spans: list[_Span]) -> list[_Span]:
    if len(spans) > 1 and spans[0][0] == "preamble" and not code[spans[0][2]:spans[0][3]].strip():
        first, second = spans[0], spans[1]
        spans = [(second[0], second[1], first[2], second[3], first[4], second[5]), *spans[2:]]
    if len(spans) > 1 and spans[-1][0] == "epilogue" and not code[spans[-1][2]:spans[-1][3]].strip():
        prev, last = spans[-2], spans[-1]
        spans = [*spans[:-2], (prev[0], prev[1], prev[2], last[3], prev[4], prev[5])]
    return spans


# --- fenced code in LLM replies ---------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(```|\Z)", re.DOTALL)
_ALIASES: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3"}),
    "javascript": frozenset({"javascript", "js", "jsx", "node"}),
    "typescript": frozenset({"typescript", "ts", "tsx"}),
    "java": frozenset({"java"}),
    "cpp": frozenset({"cpp", "c++", "cc", "cxx"}),
    "go": frozenset({"go", "golang"}),
    "rust": frozenset({"rust", "rs"}),
}


def extract_code(reply: str, language: str = "python") -> str:
    """Return the code of an LLM reply: the last fenced block in ``language`` (or untagged),
    else the last fenced block, else the whole reply. An unterminated fence (a generation cut
    by ``max_tokens``) runs to the end of the reply.

    Example:
        >>> extract_code("Here:\\n```python\\ndef main():\\n    pass\\n```\\nDone.")
        'def main():\\n    pass\\n'
    """
    blocks = [(str(m.group(1)).lower(), str(m.group(2))) for m in _FENCE.finditer(reply)]
    if not blocks:
        return reply
    wanted = _ALIASES.get(language, frozenset({language}))
    for tags in (wanted, frozenset({""})):
        for tag, body in reversed(blocks):
            if tag in tags:
                return body
    return blocks[-1][1]


def steps_from_texts(texts: Sequence[str]) -> list[Step]:
    """Steps given by the caller (already split): kept as they are, with lines and bytes filled."""
    steps: list[Step] = []
    line, byte = 1, 0
    for i, text in enumerate(texts):
        if "\x00" in text:
            raise InvalidInput(f"steps[{i}] contains NUL bytes")
        n_newlines = len(NEWLINE.findall(text))
        trailing = 1 if NEWLINE.search(text[-2:] if text.endswith("\r\n") else text[-1:]) else 0
        last = line + max(n_newlines - trailing, 0)
        size = len(text.encode("utf-8", "surrogatepass"))
        steps.append(Step(i, "function", f"step_{i}", line, last, byte, byte + size, text))
        line, byte = line + n_newlines, byte + size
    return steps
