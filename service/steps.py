"""Function-as-step splitting (DESIGN §2) and fenced-code extraction from LLM replies.

Pure: imports only the stdlib and ``service.errors`` (tree-sitter, for languages other than
Python, is imported lazily by ``service.steps_treesitter``). The step texts of a split always
concatenate back to the input, byte for byte.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, get_args

from service.errors import InvalidInput

Language = Literal["python", "javascript", "typescript", "java", "cpp", "go", "rust"]
StepKind = Literal["preamble", "function", "method", "epilogue"]
LANGUAGES: tuple[str, ...] = get_args(Language)

_NEWLINE = re.compile(r"\r\n|\r|\n")  # the newlines Python's tokenizer and tree-sitter count


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a program: a function or method, or the module code before/after them."""

    index: int
    kind: StepKind
    name: str
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    start_byte: int  # offsets into the UTF-8 encoding of the program
    end_byte: int
    text: str


@dataclass(frozen=True, slots=True)
class SplitResult:
    steps: list[Step]
    parsed: bool  # False when the tolerant line-based fallback was used


@dataclass(frozen=True, slots=True)
class Anchor:
    """A function-like span found by a parser: 0-based, inclusive line numbers."""

    kind: Literal["function", "method"]
    name: str
    first_line: int
    last_line: int


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
        anchors, parsed = _python_anchors(code)
    else:
        from service.steps_treesitter import treesitter_anchors

        anchors, parsed = treesitter_anchors(code, language, len(lines))
    return SplitResult(assemble_steps(code, lines, anchors), parsed)


def _line_starts(code: str) -> list[int]:
    """Character offset of the start of every line (a trailing newline opens no new line)."""
    starts = [0]
    starts.extend(m.end() for m in _NEWLINE.finditer(code) if m.end() < len(code))
    return starts


def assemble_steps(code: str, line_starts: Sequence[int], anchors: Sequence[Anchor]) -> list[Step]:
    """Cut ``code`` at anchor lines into steps that concatenate back to ``code``.

    A step runs from its first line up to the next step's first line, so code between two
    functions stays with the earlier one; code before the first function is the ``preamble`` and
    code after the last one the ``epilogue``. Whitespace-only edges join their neighbour.
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
        steps.append(Step(len(steps), kind, name, l0 + 1, max(l0 + 1, l1), byte, byte + size, text))
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


# --- Python ---------------------------------------------------------------------------------

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
# CPython 3.11 keeps the AST builder's recursion depth in interpreter-wide state: two threads inside
# ast.parse at once (a switch can happen when garbage collection runs Python code mid-parse) make it
# raise "SystemError: AST constructor recursion depth mismatch". The service parses from several
# threads, so every parse takes this lock (a parse takes microseconds to a few milliseconds).
_AST_LOCK = threading.Lock()


def parse_python(code: str) -> ast.Module:
    """``ast.parse``, one thread at a time (see ``_AST_LOCK``), with the program's own warnings (invalid
    escape sequences etc.) silenced — ``catch_warnings`` swaps process-wide state too, so it is inside."""
    with _AST_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _python_anchors(code: str) -> tuple[list[Anchor], bool]:
    try:
        tree = parse_python(code)
    except (RecursionError, MemoryError) as exc:
        raise InvalidInput("code nests too deeply to parse") from exc
    except (SyntaxError, ValueError):
        return _fallback_anchors(code), False
    if not tree.body:
        raise InvalidInput("code contains no statements (only comments or blank lines)")
    anchors: list[Anchor] = []
    for node in tree.body:
        if isinstance(node, _FUNCS):
            anchors.append(_node_anchor(node, "function", node.name))
        elif isinstance(node, ast.ClassDef):
            anchors.extend(
                _node_anchor(sub, "method", f"{node.name}.{sub.name}")
                for sub in node.body
                if isinstance(sub, _FUNCS)
            )
    return _attach_comments(anchors, _comment_lines(code)), True


def _node_anchor(node: ast.FunctionDef | ast.AsyncFunctionDef, kind: Literal["function", "method"],
                 name: str) -> Anchor:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    last = (node.end_lineno or node.lineno) - 1
    return Anchor(kind, name, first, last)


def _comment_lines(code: str) -> set[int]:
    return {i for i, line in enumerate(_NEWLINE.split(code)) if line.lstrip().startswith("#")}


def _attach_comments(anchors: list[Anchor], comment_lines: set[int]) -> list[Anchor]:
    """Comment lines directly above a function (no blank line between) belong to it."""
    out: list[Anchor] = []
    for a in anchors:
        floor = out[-1].last_line + 1 if out else 0
        first = a.first_line
        while first - 1 >= floor and (first - 1) in comment_lines:
            first -= 1
        out.append(Anchor(a.kind, a.name, first, a.last_line))
    return out


_DEF = re.compile(r"(?:async\s+)?def\s+(\w+)")
_CLASS = re.compile(r"class\s+(\w+)")


def _fallback_anchors(code: str) -> list[Anchor]:
    """Tolerant splitter for code that does not parse: cut at top-level ``def``/``class`` lines."""
    lines = _NEWLINE.split(code)
    anchors: list[Anchor] = []
    cls: str | None = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indented = len(stripped) < len(line)
        if not indented and (m := _DEF.match(line)):
            cls = None
            anchors.append(Anchor("function", m.group(1), _decorated_from(lines, i), i))
        elif not indented and (m := _CLASS.match(line)):
            cls = m.group(1)
        elif indented and cls and (m := _DEF.match(stripped)):
            anchors.append(Anchor("method", f"{cls}.{m.group(1)}", _decorated_from(lines, i), i))
        elif not indented and stripped and not stripped.startswith(("#", "@", ")", "]", "}")):
            cls = None
    return _extend_fallback(anchors, lines)


def _decorated_from(lines: list[str], i: int) -> int:
    while i > 0 and lines[i - 1].lstrip().startswith("@"):
        i -= 1
    return i


def _extend_fallback(anchors: list[Anchor], lines: list[str]) -> list[Anchor]:
    """A fallback anchor ends before the next top-level statement that is not a def."""
    out: list[Anchor] = []
    for k, a in enumerate(anchors):
        stop = anchors[k + 1].first_line if k + 1 < len(anchors) else len(lines)
        last = a.last_line
        for j in range(a.last_line + 1, stop):
            line = lines[j]
            if line.strip() and not line[0].isspace() and not line.startswith(("#", ")", "]", "}")):
                break
            if line.strip():
                last = j
        out.append(Anchor(a.kind, a.name, a.first_line, last))
    return _attach_comments(out, {i for i, ln in enumerate(lines) if ln.lstrip().startswith("#")})


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
        n_newlines = len(_NEWLINE.findall(text))
        trailing = 1 if _NEWLINE.search(text[-2:] if text.endswith("\r\n") else text[-1:]) else 0
        last = line + max(n_newlines - trailing, 0)
        size = len(text.encode("utf-8", "surrogatepass"))
        steps.append(Step(i, "function", f"step_{i}", line, last, byte, byte + size, text))
        line, byte = line + n_newlines, byte + size
    return steps
