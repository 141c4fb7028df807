"""Python's anchors for ``service.steps``: top-level functions and class methods from ``ast``, with the comment
lines right above them; a tolerant line-based fallback for code that does not parse. Stdlib only."""

from __future__ import annotations

import ast
import re
import threading
import warnings
from typing import Literal

from service.errors import InvalidInput
from service.steps.records import NEWLINE, Anchor

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


def python_anchors(code: str) -> tuple[list[Anchor], bool]:
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
    return {i for i, line in enumerate(NEWLINE.split(code)) if line.lstrip().startswith("#")}


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
    lines = NEWLINE.split(code)
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


# --- which module-level code is context (issue 12, point 4) -------------------------------------------------

def carries_logic(text: str) -> bool:
    """Whether module-level Python ``text`` (a preamble or epilogue step) computes anything of its own.

    Context — no logic — is: imports, docstrings, ``pass``, names bound to constant expressions (``MOD =
    10**9 + 7``, ``INF = float("inf")``, ``input = sys.stdin.readline``), calls whose arguments are constants
    or names (``main()``, ``sys.setrecursionlimit(10**6)``), ``print`` of such a call, ``class X:`` headers
    (their methods are steps) and an ``if __name__ == "__main__":`` block made of these. Anything else — a
    loop, reading and transforming input, a computed print — is logic: a stdin program's main code. Text
    that does not parse (an open ``class X:`` header is completed with ``pass`` first) carries none.

    Example:
        >>> carries_logic("import sys\\n\\nclass Solution:\\n")
        False
        >>> carries_logic("if __name__ == '__main__':\\n    main()\\n")
        False
        >>> carries_logic("n = int(input())\\nprint(sum(range(n)))\\n")
        True
    """
    tree = None
    for source in (text, text.rstrip() + "\n    pass\n"):
        try:
            tree = parse_python(source)
            break
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return tree is not None and not all(_context_statement(s) for s in tree.body)


def _constant_expr(node: ast.expr) -> bool:
    if isinstance(node, (ast.Constant, ast.Name, ast.Attribute)):
        return True
    if isinstance(node, ast.UnaryOp):
        return _constant_expr(node.operand)
    if isinstance(node, ast.BinOp):
        return _constant_expr(node.left) and _constant_expr(node.right)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_constant_expr(e) for e in node.elts)
    return False


def _plain_call(node: ast.expr) -> bool:
    """A call of a name with constant arguments (no call inside them: ``int(input())`` reads input)."""
    return isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and \
        all(_constant_expr(a) for a in node.args) and all(_constant_expr(k.value) for k in node.keywords)


def _context_statement(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass, *_FUNCS)):
        return True
    if isinstance(node, ast.Expr):
        v = node.value
        printed = isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "print" and \
            len(v.args) == 1 and not v.keywords and _plain_call(v.args[0])
        return isinstance(v, ast.Constant) or _plain_call(v) or printed
    if isinstance(node, ast.Assign):
        return all(isinstance(t, ast.Name) for t in node.targets) and \
            (_constant_expr(node.value) or _plain_call(node.value))
    if isinstance(node, ast.AnnAssign):
        return node.value is None or _constant_expr(node.value) or _plain_call(node.value)
    if isinstance(node, ast.If):
        main_guard = "__name__" in {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        return main_guard and all(_context_statement(s) for s in node.body + node.orelse)
    if isinstance(node, ast.ClassDef):
        return all(_context_statement(s) for s in node.body)
    return False
