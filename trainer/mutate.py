"""Mutants of a reference solution: one small semantic change inside one function (issue #5's
candidate pools mix policy samples, references and mutants).

The change is spliced into the source at the mutated expression's exact span, so every other
byte — and so every other step's text — stays the reference's: the steps before the mutated
function are a correct prefix, the mutated step is where the solution goes wrong.

Operators: the classic one-token flips (``compare``, ``arith``, ``constant``, ``boolean``) and three
whose bugs read as plausible code (issue 12's sum-of-nums finding: a PRM ranked ``return 0`` and a
loop that skips the first element above ``return sum(nums)``): ``return`` (a computed return value
becomes ``0``), ``call`` (a builtin aggregate swapped for a sibling: ``sum``→``max``, ``max``↔``min``,
``any``↔``all``) and ``range`` (``range(n)`` starts at 1). A reference's mutants are drawn across
operators (round-robin over the operators it has sites for, in a seeded order), not in proportion to
their sites, so the many comparison and arithmetic sites do not crowd the others out.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.steps import parse_python, split_code

_FLIP_CMP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_FLIP_BIN: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult}


@dataclass(frozen=True, slots=True)
class Mutant:
    code: str
    step_index: int  # the step (function) that was changed
    operator: str  # a name in OPERATORS
    line: int


def _compare(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP_CMP:
        return ast.Compare(node.left, [_FLIP_CMP[type(node.ops[0])](), *node.ops[1:]], node.comparators)
    return None


def _arith(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.BinOp) and type(node.op) in _FLIP_BIN:
        return ast.BinOp(node.left, _FLIP_BIN[type(node.op)](), node.right)
    return None


def _constant(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return ast.Constant(node.value + (1 if node.value <= 0 else -1))
    return None


def _boolean(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)
    return None


_SWAP_CALL = {"sum": "max", "max": "min", "min": "max", "any": "all", "all": "any"}


def _return(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Constant):
        return ast.Return(ast.Constant(0))
    return None


def _call(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SWAP_CALL:
        return ast.Call(ast.Name(_SWAP_CALL[node.func.id], ast.Load()), node.args, node.keywords)
    return None


def _range(node: ast.AST) -> ast.AST | None:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred)):
        return ast.Call(node.func, [ast.Constant(1), node.args[0]], [])
    return None


OPERATORS: dict[str, Callable[[ast.AST], ast.AST | None]] = {
    "compare": _compare, "arith": _arith, "constant": _constant, "boolean": _boolean,
    "return": _return, "call": _call, "range": _range}


def mutants(code: str, *, count: int, seed: int, operators: Sequence[str] = tuple(OPERATORS)) -> list[Mutant]:
    """Up to ``count`` distinct mutants of ``code`` (each parses; each differs in one function step), drawn
    round-robin over ``operators`` (names in ``OPERATORS``)."""
    if unknown := sorted(set(operators) - OPERATORS.keys()):
        raise ValueError(f"unknown mutant operators {unknown}: use {sorted(OPERATORS)}")
    try:
        tree = parse_python(code)
    except SyntaxError:
        return []
    steps = split_code(code).steps
    line_starts = [0]
    for line in code.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    sites: list[tuple[int, str, ast.AST, ast.AST]] = []
    for node in ast.walk(tree):
        if not hasattr(node, "end_lineno") or node.end_lineno is None:
            continue
        for name in operators:
            new = OPERATORS[name](node)
            if new is None:
                continue
            step = next((s for s in steps if s.kind in ("function", "method")
                         and s.start_line <= node.lineno and node.end_lineno <= s.end_line), None)
            if step is not None:
                sites.append((step.index, name, node, new))
    rng = random.Random(seed)
    rng.shuffle(sites)
    out: list[Mutant] = []
    seen = {code}
    for step_index, name, node, new in _round_robin(sites, rng):
        start = line_starts[node.lineno - 1] + _byte_to_char(code, node.lineno, node.col_offset, line_starts)
        end = line_starts[node.end_lineno - 1] + _byte_to_char(code, node.end_lineno, node.end_col_offset,  # type: ignore[arg-type]
                                                               line_starts)
        mutated = code[:start] + _expr(new) + code[end:]
        if mutated in seen or not _parses(mutated):
            continue
        seen.add(mutated)
        out.append(Mutant(mutated, step_index, name, node.lineno))
        if len(out) == count:
            break
    return out


def _round_robin(sites: list[tuple[int, str, ast.AST, ast.AST]], rng: random.Random,
                 ) -> list[tuple[int, str, ast.AST, ast.AST]]:
    """``sites`` (already shuffled) reordered to take one of each operator in turn, operators in a seeded order."""
    by_op: dict[str, list[tuple[int, str, ast.AST, ast.AST]]] = {}
    for site in sites:
        by_op.setdefault(site[1], []).append(site)
    queues = [by_op[name] for name in rng.sample(sorted(by_op), len(by_op))]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _byte_to_char(code: str, lineno: int, col: int, line_starts: list[int]) -> int:
    """ast columns are UTF-8 byte offsets within the line; the splice needs character offsets."""
    line = code[line_starts[lineno - 1]: line_starts[lineno]]
    return len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def _expr(node: ast.AST) -> str:
    text = ast.unparse(node)
    return f"({text})" if isinstance(node, ast.BinOp | ast.BoolOp | ast.Compare) else text


def _parses(code: str) -> bool:
    try:
        parse_python(code)
    except SyntaxError:
        return False
    return True
