"""Apply a unified diff of one file to its base text (what ``dreamprm ci-rerank`` does with patches).

Strict: every context and removed line must match the base. A hunk is looked for at its stated
line (shifted by the hunks before it) first, then anywhere in the file if it matches exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """The diff is malformed or does not apply to the base."""


@dataclass(frozen=True, slots=True)
class _Hunk:
    old_start: int  # 1-based; 0 for a hunk that adds to an empty file
    old: list[str]  # context + removed lines, with their line endings
    new: list[str]  # context + added lines


def looks_like_diff(text: str) -> bool:
    return bool(re.search(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@", text, re.M)) and \
        bool(re.search(r"^(---|diff --git) ", text, re.M))


def apply_unified_diff(base: str, diff: str) -> str:
    """The base text with ``diff`` (one file's unified diff) applied."""
    hunks = _parse(diff)
    if not hunks:
        raise PatchError("no hunks (@@ -a,b +c,d @@) in the diff")
    lines = base.splitlines(keepends=True)
    out: list[str] = []
    pos = 0  # next base line not yet copied
    for n, hunk in enumerate(hunks, 1):
        at = _locate(lines, hunk, pos)
        if at is None:
            raise PatchError(f"hunk {n} (at line {hunk.old_start}) does not match the base file")
        out += lines[pos:at] + hunk.new
        pos = at + len(hunk.old)
    return "".join(out + lines[pos:])


def _locate(lines: list[str], hunk: _Hunk, pos: int) -> int | None:
    want = [s.rstrip("\r\n") for s in hunk.old]

    def matches(at: int) -> bool:
        return at >= pos and [s.rstrip("\r\n") for s in lines[at: at + len(want)]] == want

    stated = max(hunk.old_start - 1, 0) if hunk.old else hunk.old_start
    if matches(stated):
        return stated
    found = [at for at in range(pos, len(lines) - len(want) + 1) if matches(at)]
    return found[0] if len(found) == 1 else None


def _parse(diff: str) -> list[_Hunk]:
    hunks: list[_Hunk] = []
    current: _Hunk | None = None
    old_left = new_left = 0  # lines the current hunk's header still promises
    files = 0
    for line in diff.splitlines(keepends=True):
        if old_left == 0 and new_left == 0:
            if line.startswith("\\") and current is not None:  # "\ No newline at end of file"
                for side in (current.old, current.new):
                    if side and side[-1].endswith("\n"):
                        side[-1] = side[-1][:-1]
                continue
            head = _HUNK.match(line)
            if head:
                current = _Hunk(int(head.group(1)), [], [])
                hunks.append(current)
                old_left = 1 if head.group(2) is None else int(head.group(2))
                new_left = 1 if head.group(4) is None else int(head.group(4))
            elif line.startswith("--- "):
                files += 1
                if files > 1:
                    raise PatchError("the diff changes more than one file; give one diff per candidate")
            continue  # headers, "diff --git", "index", commit messages
        assert current is not None
        body = line[1:] if len(line) > 1 else "\n"
        if line.startswith(" ") or line in ("\n", "\r\n"):
            current.old.append(body)
            current.new.append(body)
            old_left, new_left = old_left - 1, new_left - 1
        elif line.startswith("-"):
            current.old.append(body)
            old_left -= 1
        elif line.startswith("+"):
            current.new.append(body)
            new_left -= 1
        else:
            raise PatchError(f"unexpected line in a hunk: {line[:60]!r}")
        if old_left < 0 or new_left < 0:
            raise PatchError(f"a hunk at line {current.old_start} has more lines than its header says")
    if old_left or new_left:
        raise PatchError("the diff ends in the middle of a hunk")
    return hunks
