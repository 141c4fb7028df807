"""The sandbox's judge: which asserts are judged outside the sandbox, and how a reported value is compared.

Stdlib only (``service.sandbox`` uses it on the caller's side). An assert of the form ``assert EXPR == LITERAL``
(either side a literal), ``assert EXPR`` or ``assert not EXPR`` is split here: only ``EXPR`` goes into the
sandbox, which reports its value (``sandbox_runner.encode_value``), and the comparison with the expected literal
happens in the caller, so the expected answer never enters the candidate's process and no event the program
forges can turn a wrong answer into a pass. Any other assert (helper functions, tolerances, ``check(...)``)
runs inside the sandbox, as the test was written, and its verdict is only as trustworthy as that process
(see SECURITY.md).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Literal

_MISSING = object()
_SHOWN = 80


@dataclass(frozen=True, slots=True)
class JudgedTest:
    """One functional test as the runner sees it (``inside``) plus what the judge keeps (``expected``)."""

    mode: Literal["code", "equal", "truthy", "falsy"]
    inside: str  # ``code``: the whole test; otherwise the expression whose value the runner reports
    expected: Any = None  # ``equal`` only: the literal, never sent to the sandbox

    def payload(self) -> dict[str, Any]:
        if self.mode == "code":
            return {"code": self.inside}
        return {"expr": self.inside, "bool": self.mode != "equal"}


class _Opaque:
    """A reported value that is not a plain value: it equals nothing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<{self.name} object>"


def judge_test(code: str) -> JudgedTest:
    """How ``code`` (one functional test) is judged; see the module doc."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return JudgedTest("code", code)
    if len(tree.body) != 1 or not isinstance(stmt := tree.body[0], ast.Assert) or stmt.msg is not None:
        return JudgedTest("code", code)
    test = stmt.test
    if (constant := _literal(test)) is not _MISSING:  # ``assert False``: decided here, nothing to run
        return JudgedTest("equal", "True", bool(constant))
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        for expr, other in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
            if (value := _literal(other)) is not _MISSING and _literal(expr) is _MISSING:
                return JudgedTest("equal", ast.unparse(expr), value)
        return JudgedTest("code", code)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return JudgedTest("falsy", ast.unparse(test.operand))
    if isinstance(test, ast.Compare | ast.BoolOp):  # e.g. ``abs(x - y) < 1e-6``: as written, inside
        return JudgedTest("code", code)
    return JudgedTest("truthy", ast.unparse(test))


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _MISSING


def decode_value(encoded: Any) -> Any:
    """The value ``sandbox_runner.encode_value`` encoded; malformed input gives an opaque value."""
    try:
        return _decode(encoded)
    except (TypeError, ValueError, KeyError, IndexError, RecursionError, MemoryError, OverflowError):
        return _Opaque("malformed")


def _decode(enc: Any) -> Any:
    if enc is None or isinstance(enc, bool | int | float | str):
        return enc
    if isinstance(enc, list):
        return [_decode(v) for v in enc]
    if not isinstance(enc, dict) or len(enc) != 1:
        raise ValueError("not an encoded value")
    (tag, body), = enc.items()
    if tag == "int":
        return int(body, 16)
    if tag == "complex":
        return complex(float(body[0]), float(body[1]))
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in body}
    if tag in ("tuple", "set", "frozenset"):
        items = [_decode(v) for v in body]
        return tuple(items) if tag == "tuple" else set(items) if tag == "set" else frozenset(items)
    if tag == "opaque":
        return _Opaque(str(body))
    raise ValueError(f"unknown tag {tag!r}")


def verdict(test: JudgedTest, event: dict[str, Any]) -> tuple[bool, str, str]:
    """(passed, kind, message) of ``test`` from its runner event (``ok`` for a code test, ``v`` otherwise)."""
    if test.mode == "code" or "v" not in event:
        ok = event.get("ok") is True and test.mode == "code"  # a value test must report a value
        kind = event.get("kind") if not ok else "passed"
        return ok, str(kind or "wrong_answer"), str(event.get("msg") or "AssertionError")
    value = decode_value(event["v"])
    try:
        ok = bool(value == test.expected) if test.mode == "equal" else value is (test.mode == "truthy")
    except Exception:  # noqa: BLE001 - e.g. comparing huge nested values
        ok = False
    if ok:
        return True, "passed", ""
    return False, "wrong_answer", f"AssertionError: got {_short(value)}"


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr) if not isinstance(value, _Opaque) else repr(value)
    except (ValueError, TypeError, RecursionError):
        text = repr(type(value).__name__)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
