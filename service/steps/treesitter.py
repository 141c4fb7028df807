"""Function anchors for the non-Python languages of ``service.steps``, found with tree-sitter.

Owns the per-language rules for which top-level nodes are steps (DESIGN §2); the cutting of
code into steps at these anchors stays in ``service.steps.assemble_steps``.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal, cast

from tree_sitter import Node, Parser
from tree_sitter_language_pack import SupportedLanguage, get_parser

from service.errors import InvalidInput
from service.steps.records import Anchor

# comment-like nodes that belong to the function directly below them
_LEADING: dict[str, frozenset[str]] = {
    "javascript": frozenset({"comment", "decorator"}), "typescript": frozenset({"comment", "decorator"}),
    "java": frozenset({"line_comment", "block_comment"}), "cpp": frozenset({"comment"}),
    "go": frozenset({"comment"}), "rust": frozenset({"line_comment", "block_comment", "attribute_item"}),
}
_COMMENTS = frozenset({"comment", "line_comment", "block_comment", "hash_bang_line"})
_NEWLINE = re.compile(rb"\r\n|\r|\n")  # the same line breaks as ``service.steps``
_BARE_CR = re.compile(rb"\r(?!\n)")  # a line break there, not for tree-sitter (rows count \n only)
_MAX_NEST = 2  # namespaces / modules followed into, each level treated as top level
_UNWRAP_LIMIT = 8  # declarator / type wrappers followed to find a name


@dataclass(frozen=True, slots=True)
class _Fn:
    kind: Literal["function", "method"]
    name: str


@dataclass(frozen=True, slots=True)
class _Cls:
    """Bodies whose members are methods of class ``name``, or top-level code when it is None."""

    name: str | None
    bodies: tuple[Node, ...]


_Item = _Fn | _Cls
_Classify = Callable[[Node], _Item | None]


@cache
def _parser(language: str) -> tuple[Parser, threading.Lock]:
    """One parser per language; a parser is not safe to share between threads, hence the lock."""
    return get_parser(cast(SupportedLanguage, language)), threading.Lock()


def treesitter_anchors(code: str, language: str, n_lines: int) -> tuple[list[Anchor], bool]:
    """Anchors of the top-level functions and class methods of ``code``, and whether it parsed.

    Raises:
        InvalidInput: the code holds nothing but comments.
    """
    source = code.encode("utf-8", "surrogatepass")
    parser, lock = _parser(language)
    with lock:
        tree = parser.parse(_BARE_CR.sub(b"\n", source))  # same length: byte offsets hold
    root = tree.root_node
    if all(child.type in _COMMENTS for child in root.named_children):
        raise InvalidInput("code contains no statements (only comments or blank lines)")
    starts = [0, *(m.end() for m in _NEWLINE.finditer(source) if m.end() < len(source))]
    scanner = _Scanner(language, starts, max(n_lines, 1))
    return scanner.scan(root, _TOP[language], 0), not root.has_error


@dataclass(frozen=True, slots=True)
class _Scanner:
    """Walks the fixed levels of one tree: top level, class bodies and a few namespace levels."""

    language: str
    line_starts: list[int]  # byte offsets, lines split as in ``service.steps``
    n_lines: int

    def line(self, byte: int) -> int:
        return min(max(bisect_right(self.line_starts, byte) - 1, 0), self.n_lines - 1)

    def span(self, node: Node) -> tuple[int, int]:
        first = self.line(node.start_byte)
        return first, max(first, self.line(node.end_byte - 1))

    def scan(self, container: Node, classify: _Classify, depth: int) -> list[Anchor]:
        anchors: list[Anchor] = []
        prev_last = self.line(container.start_byte) if depth else -1  # a body opens on its line
        lead_first: int | None = None
        lead_last = -1
        for child in container.named_children:
            first, last = self.span(child)
            if child.type in _LEADING[self.language]:
                if first <= prev_last:  # a trailing comment of the statement before
                    lead_first, prev_last = None, last
                elif lead_first is None or first > lead_last + 1:
                    lead_first, lead_last = first, last
                else:
                    lead_last = last
                continue
            item = classify(child)
            if isinstance(item, _Fn):
                floor = anchors[-1].last_line + 1 if anchors else 0
                if lead_first is not None and lead_last >= first - 1:
                    first = min(first, max(lead_first, floor))
                anchors.append(Anchor(item.kind, item.name, first, last))
            elif item is not None and (item.name is not None or depth < _MAX_NEST):
                members = _TOP[self.language] if item.name is None else _methods(self.language, item.name)
                for body in item.bodies:
                    anchors.extend(self.scan(body, members, depth + 1))
            prev_last, lead_first = last, None
        return anchors


def _text(node: Node | None, default: str = "anonymous") -> str:
    if node is None or not node.text:
        return default
    return "".join(node.text.decode("utf-8", "replace").split())


def _name(node: Node, default: str = "anonymous") -> str:
    return _text(node.child_by_field_name("name"), default)


def _named(node: Node, index: int) -> Node | None:
    children = node.named_children
    return children[index] if children else None


_MEMBERS: dict[str, frozenset[str]] = {  # method nodes in a class body (C++ is done apart)
    "javascript": frozenset({"method_definition"}), "typescript": frozenset({"method_definition"}),
    "java": frozenset({"method_declaration", "constructor_declaration", "compact_constructor_declaration"}),
    "go": frozenset(), "rust": frozenset({"function_item"}),
}


def _methods(language: str, cls: str) -> _Classify:
    """Classify the members of a body of class ``cls``: methods with a body are anchors."""

    def classify(node: Node) -> _Item | None:
        if language == "cpp":
            inner = _cpp_unwrap(node)
            name = _cpp_function_name(inner) if inner.type == "function_definition" else None
        elif node.type in _MEMBERS[language] and node.child_by_field_name("body") is not None:
            name = _name(node)
        else:
            name = None
        return None if name is None else _Fn("method", f"{cls}.{name}")

    return classify


# JavaScript / TypeScript
_JS_FUNCTIONS = frozenset({"function_declaration", "generator_function_declaration"})
_JS_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_JS_CLASSES = frozenset({"class_declaration", "abstract_class_declaration", "class"})


def _js_top(node: Node) -> _Item | None:
    if node.type in _JS_FUNCTIONS:
        return _Fn("function", _name(node))
    if node.type in ("lexical_declaration", "variable_declaration"):
        declarators = [c for c in node.named_children if c.type == "variable_declarator"]
        value = declarators[0].child_by_field_name("value") if len(declarators) == 1 else None
        if value is not None and value.type in _JS_FUNCTION_VALUES:
            return _Fn("function", _name(declarators[0]))
    elif node.type in _JS_CLASSES and (body := node.child_by_field_name("body")) is not None:
        return _Cls(_name(node, "default"), (body,))
    elif node.type == "export_statement":
        inner = node.child_by_field_name("declaration") or node.child_by_field_name("value")
        if inner is not None and inner.type in _JS_FUNCTION_VALUES:
            return _Fn("function", "default")  # export default function () {}
        if inner is not None and inner.type != "export_statement":
            return _js_top(inner)
    return None


# Java
_JAVA_CLASSES = frozenset({"class_declaration", "interface_declaration", "enum_declaration",
                           "record_declaration"})


def _java_top(node: Node) -> _Item | None:
    body = node.child_by_field_name("body")
    if node.type not in _JAVA_CLASSES or body is None:
        return None
    if body.type == "enum_body":  # methods follow the constants, in enum_body_declarations
        return _Cls(_name(node), tuple(c for c in body.named_children if c.type == "enum_body_declarations"))
    return _Cls(_name(node), (body,))


# C++
def _cpp_function_name(node: Node) -> str:
    declarator = node.child_by_field_name("declarator")
    for _ in range(_UNWRAP_LIMIT):  # pointer_declarator, reference_declarator, ... → function_declarator
        if declarator is None or declarator.type == "function_declarator":
            break
        inner = declarator.child_by_field_name("declarator")
        declarator = inner if inner is not None else _named(declarator, -1)
    if declarator is None or declarator.type != "function_declarator":
        return "anonymous"
    return _text(declarator.child_by_field_name("declarator"))


def _cpp_unwrap(node: Node) -> Node:
    """The function or class a ``template_declaration`` / ``declaration`` wraps, else ``node``."""
    if node.type == "template_declaration":
        node = _named(node, -1) or node
    if node.type == "declaration":
        node = node.child_by_field_name("type") or node
    return node


def _cpp_top(node: Node) -> _Item | None:
    inner = _cpp_unwrap(node)
    if inner.type == "function_definition":
        return _Fn("function", _cpp_function_name(inner))
    body = inner.child_by_field_name("body")
    if inner.type in ("class_specifier", "struct_specifier") and body is not None:
        return _Cls(_name(inner), (body,))
    if node.type == "namespace_definition" and body is not None:
        return _Cls(None, (body,))
    return None


# Go
def _go_top(node: Node) -> _Item | None:
    if node.type == "function_declaration":
        return _Fn("function", _name(node))
    if node.type != "method_declaration":
        return None
    receiver = node.child_by_field_name("receiver")
    params = [c for c in receiver.named_children if c.type == "parameter_declaration"] if receiver else []
    recv = _unwrap_type(params[0].child_by_field_name("type") if params else None)
    return _Fn("method", f"{_text(recv)}.{_name(node)}")


def _unwrap_type(node: Node | None) -> Node | None:
    """``*T``, ``&T``, ``T[K]``, ``T<K>`` → ``T``."""
    for _ in range(_UNWRAP_LIMIT):
        if node is None or node.type not in ("pointer_type", "reference_type", "generic_type",
                                             "parenthesized_type"):
            break
        node = node.child_by_field_name("type") or _named(node, 0)
    return node


# Rust
def _rust_top(node: Node) -> _Item | None:
    body = node.child_by_field_name("body")
    if node.type == "function_item":
        return _Fn("function", _name(node))
    if body is None:
        return None
    if node.type == "impl_item":
        return _Cls(_text(_unwrap_type(node.child_by_field_name("type"))), (body,))
    if node.type == "trait_item":
        return _Cls(_name(node), (body,))
    return _Cls(None, (body,)) if node.type == "mod_item" else None


_TOP: dict[str, _Classify] = {
    "javascript": _js_top, "typescript": _js_top, "java": _java_top,
    "cpp": _cpp_top, "go": _go_top, "rust": _rust_top,
}
