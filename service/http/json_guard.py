"""Checks a JSON request body before any route sees it: UTF-8, JSON syntax, nesting depth, number sizes,
and text that is not Unicode (lone surrogates) or holds NUL. Stdlib only; raises ``service.errors`` types.

Every string anywhere in the body is checked (keys too), so a new field can never reintroduce a 500.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.errors import InvalidEncoding, InvalidInput, InvalidJSON, JSONTooDeep, NumberTooLarge

MAX_INT = 2**63 - 1  # no field takes more; larger literals are a client bug or an attack (CVE-2020-10735)
MAX_NUMBER_CHARS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json_body(body: bytes, *, max_depth: int) -> None:
    """Raise ``InvalidEncoding``, ``InvalidJSON``, ``JSONTooDeep``, ``NumberTooLarge`` or ``InvalidInput``
    (NUL in a string) when ``body`` is not a clean JSON document; return when it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"request body is not UTF-8: invalid byte at offset {exc.start}") from None
    if text.startswith("\ufeff"):
        raise InvalidEncoding("request body starts with a byte-order mark; send plain UTF-8")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    except RecursionError:  # json's C scanner recurses once per level, up to the interpreter's limit
        raise JSONTooDeep(f"request body nests deeper than {max_depth} levels") from None
    _check_values(value, max_depth)


def _parse_int(literal: str) -> int:
    if len(literal) > 20 or abs(value := int(literal)) > MAX_INT:
        raise NumberTooLarge(f"integer {literal[:24]}{'...' if len(literal) > 24 else ''} is outside 64 bits")
    return value


def _parse_float(literal: str) -> float:
    value = float(literal)
    if len(literal) > MAX_NUMBER_CHARS or not math.isfinite(value):
        raise NumberTooLarge(f"number {literal[:24]}{'...' if len(literal) > 24 else ''} is too large or too long")
    return value


def _no_constant(name: str) -> Any:
    raise InvalidJSON(f"request body is not valid JSON: {name} is not a JSON value")


Path = tuple[Any, ...] | None  # (parent path, key or index), built lazily: rendered only in an error


def _check_values(value: Any, max_depth: int) -> None:
    """Every string (keys too) and the nesting depth, iteratively."""
    stack: list[tuple[Any, Path, int]] = [(value, None, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            raise JSONTooDeep(f"request body nests deeper than {max_depth} levels (at {_render(path)})")
        if isinstance(item, dict):
            for key, child in item.items():
                where = (path, key)
                _check_text(key, where)
                stack.append((child, where, depth + 1))
        else:
            stack.extend((child, (path, i), depth + 1) for i, child in enumerate(item))


def _check_text(text: str, path: Path) -> None:
    if "\x00" in text:
        raise InvalidInput(f"{_render(path)}: text must not contain NUL (U+0000)")
    if _SURROGATE.search(text):
        raise InvalidEncoding(f"{_render(path)}: a lone surrogate (\\ud800-\\udfff) is not Unicode text")


def _render(path: Path) -> str:
    """``items[1].code`` for the path ``(((None, 'items'), 1), 'code')``; NUL and surrogates made printable."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    shown = "".join(reversed(parts)).lstrip(".") or "body"
    return _SURROGATE.sub("\ufffd", shown.replace("\x00", "\\u0000"))[:200]
