"""Worked examples of a problem statement as public tests (issue #15): doctests, ``f(x) == y`` lines, LeetCode
``Input:/Output:`` blocks, contest "Sample Input/Output" blocks (one reader per form, sharing the bounded line
scanner and the literal checks, hence one module of that length).

Pure: stdlib only, nothing is evaluated (values are checked with ``ast.literal_eval``/``ast.parse``; the tests
run only in the sandbox). A block that cannot be read with confidence is skipped and counted, never guessed.
Work is bounded: at most ``MAX_SCAN_CHARS`` of the statement are read, line by line, with no backtracking regex.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

TestType = Literal["functional", "stdin"]
Form = Literal["doctest", "inline", "leetcode", "sample_io"]

MAX_SCAN_CHARS = 1 << 20  # the request limit of a statement
MAX_FIELD_CHARS = 1 << 15  # one example's input or expected output
MAX_LINE_CHARS = 1 << 12  # longer lines are never read as a call
MAX_TEXT_CHARS = 400  # the statement excerpt shown with a test
DEFAULT_MAX_EXAMPLES = 16
MAX_FOUND = 256  # raw finds (before folding duplicates) after which the scan stops
# run before a candidate on functional examples: LeetCode's preamble (stubs use List, deque, gcd, ... unimported),
# then the builtin pow again (math's star import shadows the 3-argument pow that modular solutions use)
EXAMPLE_SETUP = ("from typing import *\nfrom functools import *\nfrom collections import *\nfrom itertools import *\n"
                 "from heapq import *\nfrom bisect import *\nfrom string import *\nfrom operator import *\n"
                 "from math import *\n"
                 "import bisect, collections, datetime, functools, heapq, itertools, math, operator, re, string\n"
                 "inf = float('inf')\nfrom builtins import pow\n")

_NAME = r"[A-Za-z_][A-Za-z_0-9]*"
_DEF = re.compile(rf"^\s*def\s+({_NAME})\s*\(([^)]*)\)?\s*(?:->\s*([^:]*))?")
_CLASS_SOLUTION = re.compile(r"^\s*class\s+Solution\b")
_SEPARATORS = ("==>", "==", "➞", "→", "=>", "->", "# returns", "#=>", "# =>", "# ->", "should return",
               "should equal", "should be", "returns", "//=>")
_BULLET = re.compile(r"^(?:[*\-•]\s+|for\s+|\d+[.)]\s+)")
_JSON_WORDS = re.compile(r"\b(true|false|null)\b")
_NODE_TYPES = ("TreeNode", "ListNode", "Node")
_ANY_ORDER = re.compile(r"(?i)\bin any order\b|\bany order\b")
_BUILTINS = frozenset(dir(builtins))
_FOR_SHOULD = re.compile(r"(?i)^for\s+(\w+\s*=.*?)\s*,?\s+the\s+(?:output|result)\s+should\s+be\s+(\S.*)$")
_IO_HEADER = re.compile(r"^\s*-*\s*(sample|example)?\s*(\d+\s*)?(input|output)\s*(\d+\s*)?[:.]?\s*-*\s*$", re.I)
_EXAMPLE_HEADER = re.compile(r"^\s*[-#*=\s]*(sample|example)s?\b", re.I)
_STOP_HEADER = re.compile(r"^\s*[-#*=]*\s*(note|notes|explanation|constraints?|hint|output explanation|"
                          r"example|sample|in the first|in the second|-{3,})\b", re.I)


@dataclass(frozen=True, slots=True)
class Example:
    """One extracted test: ``code`` (asserts, functional) or ``input``/``output`` (stdin), and its source text."""

    form: Form
    text: str
    code: str | None = None
    input: str | None = None
    output: str | None = None


@dataclass(frozen=True, slots=True)
class Extraction:
    test_type: TestType
    entry_point: str | None
    examples: list[Example] = field(default_factory=list)
    skipped: int = 0  # example-like blocks that could not be read with confidence
    truncated: bool = False  # the statement was longer than MAX_SCAN_CHARS, or examples past the limit were dropped


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    call: str  # how a test calls it: "f" or "Solution().f"
    params: tuple[str, ...] | None  # parameter names (without self), when a signature is known
    node_params: frozenset[str] = frozenset()  # parameters typed TreeNode/ListNode: no literal maps onto them
    node_result: bool = False  # returns a TreeNode/ListNode: its serialized form is no comparable literal
    any_order: bool = False  # the statement allows the answer "in any order": lists compare sorted


def extract_examples(problem: str, *, starter_code: str | None = None, entry_point: str | None = None,
                     test_type: TestType | None = None, max_examples: int = DEFAULT_MAX_EXAMPLES) -> Extraction:
    """The statement's worked examples as tests of the kind ``test_type`` (guessed when None).

    Args:
        problem: the statement (HumanEval prompts include the signature and docstring).
        starter_code: a signature or ``class Solution`` stub; gives the entry point and parameter names.
        entry_point: the function or method the examples call.
        test_type: "functional" (assert tests) or "stdin" ({input, output}); None: functional when an entry
            point is known or found, else stdin.

    Example:
        >>> ex = extract_examples("Add one.\\n    >>> inc(1)\\n    2\\n", starter_code="def inc(x):\\n")
        >>> ex.test_type, ex.entry_point, ex.examples[0].code
        ('functional', 'inc', 'assert inc(1) == 2')
    """
    truncated = len(problem) > MAX_SCAN_CHARS
    text = problem[:MAX_SCAN_CHARS]
    target = _target(text, starter_code, entry_point)
    if target is not None and _ANY_ORDER.search(text):
        target = dataclasses.replace(target, any_order=True)
    kind: TestType = test_type or ("functional" if target is not None else "stdin")
    lines = text.splitlines()
    found: list[Example] = []
    skipped = 0
    if kind == "functional" and target is not None:
        for part in (_doctests(lines, target), _inline(lines, target), _leetcode(lines, target)):
            got, bad = part
            found += got
            skipped += bad
    elif kind == "stdin":
        found, skipped = _sample_io(lines)
    unique = list({(e.code, e.input, e.output): e for e in found}.values())
    truncated = truncated or len(found) >= MAX_FOUND
    if len(unique) > max_examples:
        unique, truncated = unique[:max_examples], True
    return Extraction(kind, target.name if target else entry_point, unique, skipped, truncated)


# --- the entry point ---------------------------------------------------------------------------


def _target(text: str, starter_code: str | None, entry_point: str | None) -> _Target | None:
    for source in (starter_code, text):
        if source and (t := _signature(source[:MAX_SCAN_CHARS], entry_point)) is not None:
            return t
    if entry_point:
        return _Target(entry_point, entry_point, None)
    calls = Counter(m.group(1) for line in text.splitlines() if len(line) < MAX_LINE_CHARS
                    for m in re.finditer(rf"(?:>>>\s*|^\s*(?:assert\s+)?)({_NAME})\s*\(", line)
                    if _inline_split(line.strip().removeprefix(">>>").strip(), m.group(1)) is not None
                    or line.lstrip().startswith(">>>"))
    calls.pop("print", None)
    return _Target(calls.most_common(1)[0][0], calls.most_common(1)[0][0], None) if calls else None


def _signature(source: str, entry_point: str | None) -> _Target | None:
    """The ``def`` of ``entry_point`` (or the last top-level / ``Solution`` function) and its parameters."""
    in_solution = False
    best: _Target | None = None
    for line in source.splitlines():
        if len(line) > MAX_LINE_CHARS:
            continue
        if _CLASS_SOLUTION.match(line):
            in_solution = True
            continue
        if line.strip() and not line[0].isspace() and not line.lstrip().startswith(("def", "@", "#")):
            in_solution = False
        m = _DEF.match(line)
        if m is None or (entry_point and m.group(1) != entry_point) or m.group(1).startswith("__"):
            continue
        method = in_solution and line[0].isspace()
        if not method and line[0].isspace():
            continue  # a nested helper
        params, nodes = _params(m.group(2), method)
        returns = m.group(3) or ""
        best = _Target(m.group(1), f"Solution().{m.group(1)}" if method else m.group(1), params, nodes,
                       any(t in returns for t in _NODE_TYPES))
        if entry_point or method:
            return best
    return best


def _params(arglist: str, method: bool) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    names, nodes = [], set()
    for raw in _split_top(arglist, ","):
        part = raw.strip()
        if not part or part.startswith("*"):
            return None, frozenset()
        name, _, annotation = part.partition(":")
        name = name.split("=")[0].strip()
        names.append(name)
        if any(t in annotation for t in _NODE_TYPES):
            nodes.add(name)
    if method and names and names[0] == "self":
        names = names[1:]
    return tuple(names), frozenset(nodes)


# --- functional forms --------------------------------------------------------------------------


def _doctests(lines: Sequence[str], target: _Target) -> tuple[list[Example], int]:
    out: list[Example] = []
    skipped, i = 0, 0
    while i < len(lines) and len(out) < MAX_FOUND:
        line = lines[i].strip()
        if not line.startswith(">>>"):
            i += 1
            continue
        expr, j = line[3:].strip(), i + 1
        while j < len(lines) and lines[j].strip().startswith("..."):
            expr += "\n" + lines[j].strip()[3:].strip()
            j += 1
        want = []
        while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith((">>>", '"""', "'''")):
            want.append(lines[j].strip())
            j += 1
        if not want and (parts := _inline_split(expr, target.name)) is not None:
            expr, want = parts[0], [parts[1]]
        example = _call_test(expr, "\n".join(want), target, "doctest", "\n".join(lines[i:j]))
        if example is None:
            skipped += int(_mentions(expr, target.name))
        else:
            out.append(example)
        i = j
    return out, skipped


def _inline(lines: Sequence[str], target: _Target) -> tuple[list[Example], int]:
    out: list[Example] = []
    skipped, in_examples = 0, False
    for raw in lines:
        if len(out) >= MAX_FOUND:
            break
        in_examples = in_examples or ("xample" in raw and len(raw) < MAX_LINE_CHARS)
        line = _BULLET.sub("", raw.strip().strip("`").strip())
        if len(line) > MAX_LINE_CHARS or line.startswith((">>>", "def ", "class ")) or not _mentions(line, target.name):
            continue
        line = line.removeprefix("assert ").strip()
        parts = _inline_split(line, target.name, plain_equals=in_examples)
        if parts is None:
            continue  # prose that mentions the function
        example = _call_test(parts[0], parts[1], target, "inline", raw.strip())
        if example is None:
            skipped += 1
        else:
            out.append(example)
    return out, skipped


def _inline_split(line: str, name: str, *, plain_equals: bool = False) -> tuple[str, str] | None:
    """``f(args) SEP value`` -> (call, value) when the line starts with a call of ``name``.

    A plain ``f(x) = v`` counts only after an "Example" line (before it, it is usually a definition).
    """
    m = re.match(rf"(?:[\w.]*\.)?{re.escape(name)}\s*\(", line)
    if m is None:
        return None
    end = _close_paren(line, m.end() - 1)
    if end is None:
        return None
    rest = line[end + 1:].strip()
    for sep in _SEPARATORS + (("=",) if plain_equals else ()):
        if rest.startswith(sep):
            return line[:end + 1], rest[len(sep):].strip()
    return None


def _leetcode(lines: Sequence[str], target: _Target) -> tuple[list[Example], int]:
    """``Input: a = 1, b = [2]`` then ``Output: 3`` (on the same or the next line)."""
    out: list[Example] = []
    skipped = 0
    for i, raw in enumerate(lines):
        if len(out) >= MAX_FOUND:
            break
        line = raw.strip()
        if len(line) < MAX_LINE_CHARS and (m := _FOR_SHOULD.match(line)):  # For x = 1, y = 2 the output should be 3
            code = _leetcode_test(m.group(1).rstrip(", "), m.group(2).rstrip("."), target)
            if code is None:
                skipped += 1
            else:
                out.append(Example("leetcode", _excerpt(line), code=code))
            continue
        if not re.match(r"(?i)^\**input\**\s*:", line):
            continue
        args = line.split(":", 1)[1].strip()
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        nxt = lines[j].strip() if j < len(lines) else ""
        if not re.match(r"(?i)^\**output\**\s*:", nxt) or len(args) > MAX_FIELD_CHARS:
            skipped += 1
            continue
        want = nxt.split(":", 1)[1].strip()
        code = _leetcode_test(args, want, target)
        if code is None:
            skipped += 1
        else:
            out.append(Example("leetcode", _excerpt(f"{line}\n{nxt}"), code=code))
    return out, skipped


def _leetcode_test(args: str, want: str, target: _Target) -> str | None:
    pairs = [p.strip() for p in _split_top(args, ",")]
    names, values = [], []
    if "=" not in args and target.params is not None and len(target.params) == 1:  # "Input: [4,2,3]"
        pairs = [f"{target.params[0]} = {args}"]
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not re.fullmatch(_NAME, name.strip()):
            return None
        names.append(name.strip())
        values.append(_json_literal(value.strip()))
    if target.params is not None and (set(names) != set(target.params) or len(names) != len(target.params)):
        return None
    if set(names) & target.node_params or target.node_result or any(v is None for v in values):
        return None
    expected = _json_literal(want)
    if expected is None:
        return None
    given = dict(zip(names, values, strict=True))
    if target.params is not None:  # positional, in the signature's order: references may rename parameters
        call = f"{target.call}({', '.join(str(given[n]) for n in target.params)})"
    else:
        call = f"{target.call}({', '.join(f'{n}={v}' for n, v in given.items())})"
    return _assert(call, expected, any_order=target.any_order)


# --- stdin forms -------------------------------------------------------------------------------


def _sample_io(lines: Sequence[str]) -> tuple[list[Example], int]:
    """"Sample Input 1"/"Sample Output 1", or "Input"/"Output" after an Example(s) header."""
    out: list[Example] = []
    skipped, in_examples, i = 0, False, 0
    while i < len(lines) and len(out) < MAX_FOUND:
        line = lines[i]
        header = _io_header(line, in_examples)
        if header is None:
            if _EXAMPLE_HEADER.match(line) and len(line) < 80:
                in_examples = True
            elif re.match(r"^\s*-{3,}\s*\w", line):
                in_examples = bool(_EXAMPLE_HEADER.match(line.strip("- ")))
            i += 1
            continue
        if header != "input":
            i += 1
            continue
        j = i + 1
        data: list[str] = []
        while j < len(lines) and _io_header(lines[j], True) is None:
            data.append(lines[j])
            j += 1
        if j >= len(lines) or _io_header(lines[j], True) != "output":
            skipped += 1
            i = j
            continue
        k = j + 1
        want: list[str] = []
        while k < len(lines) and _io_header(lines[k], True) is None and not _STOP_HEADER.match(lines[k]):
            if not lines[k].strip() and want:
                break
            want.append(lines[k])
            k += 1
        example = _io_example(data, want, lines[i:k])
        if example is None:
            skipped += 1
        else:
            out.append(example)
        i = k
    return out, skipped


def _io_header(line: str, in_examples: bool) -> str | None:
    """"input"/"output" when ``line`` heads an example's data (format sections "-----Input-----" do not)."""
    if len(line) > 80 or (m := _IO_HEADER.match(line)) is None:
        return None
    dashed = line.strip().startswith("-") and line.strip().endswith("-")
    if m.group(1) is None and (dashed or not in_examples):
        return None
    return m.group(3).lower()


def _io_example(data: list[str], want: list[str], source: Sequence[str]) -> Example | None:
    inp, exp = _block(data), _block(want)
    if not inp.strip() or not exp.strip() or len(inp) > MAX_FIELD_CHARS or len(exp) > MAX_FIELD_CHARS:
        return None
    return Example("sample_io", _excerpt("\n".join(source)), input=inp, output=exp)


def _block(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    return text + "\n" if text else ""


# --- shared pieces -----------------------------------------------------------------------------


def _call_test(expr: str, want: str, target: _Target, form: Form, source: str) -> Example | None:
    """``assert <call> == <want>`` when ``expr`` calls the target and ``want`` is a literal."""
    expr = expr.strip().rstrip(";")
    if len(expr) > MAX_FIELD_CHARS or len(want) > MAX_FIELD_CHARS or not _mentions(expr, target.name):
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not any(isinstance(n, ast.Call) and _called(n.func) == target.name for n in ast.walk(tree)):
        return None
    if _free_names(tree) or target.node_result:
        return None  # f(root), is_happy(abc): prose, or a value the statement defines elsewhere
    expected = _literal(want) or _json_literal(want)
    if expected is None:
        return None
    if "#" in expr:  # a trailing comment would swallow the rest of the assert line
        expr = ast.unparse(tree)
    if target.call != target.name:
        expr = re.sub(rf"(?<![\w.]){re.escape(target.name)}\s*\(", f"{target.call}(", expr, count=1)
    return Example(form, _excerpt(source), code=_assert(expr, expected, any_order=target.any_order))


def _free_names(tree: ast.AST) -> bool:
    """A name used as a value that is not a builtin (callees are fine: ``f(list(x))``)."""
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return any(isinstance(n, ast.Name) and id(n) not in callees and n.id not in _BUILTINS for n in ast.walk(tree))


def _assert(call: str, expected: str, *, any_order: bool = False) -> str:
    value = ast.literal_eval(expected)
    if any_order and isinstance(value, list) and len(value) > 1:
        return f"assert sorted({call}) == sorted({expected})"
    if isinstance(value, float):
        return f"assert abs(({call}) - {expected}) <= 1e-6 * max(1.0, abs({expected}))"
    return f"assert ({call}) == {expected}" if "\n" in call else f"assert {call} == {expected}"


def _literal(text: str) -> str | None:
    """``text`` (maybe with a trailing comment or full stop) as a Python literal, or None."""
    text = text.strip().strip("`").strip()
    for candidate in (text, text.split("  #")[0], text.split(" #")[0], text.rstrip(".,;")):
        candidate = candidate.strip()
        if not candidate:
            continue
        try:
            ast.literal_eval(candidate)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
            continue
        return candidate
    return None


def _json_literal(text: str) -> str | None:
    """A LeetCode value (JSON-ish: true/false/null) as a Python literal, or None."""
    text = text.strip().rstrip(",")
    converted = "".join(part if k % 2 else _JSON_WORDS.sub(lambda m: {"true": "True", "false": "False",
                                                                       "null": "None"}[m.group(1)], part)
                        for k, part in enumerate(re.split(r'("(?:[^"\\]|\\.)*")', text)))
    return _literal(converted) if converted else None


def _called(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}\s*\(", text) is not None


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, char, bracket depth after it) of each character of ``text[start:]`` outside string literals."""
    depth, quote, k = 0, "", start
    while k < len(text):
        ch = text[k]
        if quote:
            if ch == "\\":
                k += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        else:
            depth += (ch in "([{") - (ch in ")]}")
            yield k, ch, depth
        k += 1


def _close_paren(text: str, start: int) -> int | None:
    """Index of the parenthesis closing ``text[start]``, skipping strings; None when unbalanced."""
    return next((k for k, ch, depth in _outside_strings(text, start) if ch in ")]}" and depth == 0), None)


def _split_top(text: str, sep: str) -> Iterator[str]:
    """``text`` split at ``sep`` outside brackets and strings."""
    begin = 0
    for k, ch, depth in _outside_strings(text):
        if ch == sep and depth == 0:
            yield text[begin:k]
            begin = k + 1
    yield text[begin:]


def _excerpt(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"
