"""The records of a split (``Step``, ``SplitResult``) and the parsers' anchors; shared by the splitters of
``service.steps`` (Python here, other languages in ``service.steps.treesitter``). Stdlib only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

Language = Literal["python", "javascript", "typescript", "java", "cpp", "go", "rust"]
StepKind = Literal["preamble", "function", "method", "epilogue"]
MODULE_KINDS = frozenset({"preamble", "epilogue"})  # module-level code around the functions
LANGUAGES: tuple[str, ...] = get_args(Language)

NEWLINE = re.compile(r"\r\n|\r|\n")  # the newlines Python's tokenizer and tree-sitter count


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
    # module-level code without logic of its own (imports, ``class Solution:``, a ``main()`` call): scored,
    # but left out of the aggregates (``service.aggregate``); a stdin program's module-level main code is not
    context: bool = False


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
