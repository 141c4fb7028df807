"""Issue 12's first finding, re-checked for any checkpoint: the served score (``ScoringEngine``, the checkpoint's
default aggregation) of four programs for "return the sum of nums"; only ``sum`` is right. Each program is scored
twice: as a plain function and in LeetCode's ``class Solution:`` form (the form of the issue's report).

    .venv/bin/python -m benchmarks.sum_of_nums CHECKPOINT_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from service.schemas import ScoreItem
from service.serving.engine import ScoringEngine
from service.settings import Settings

PROBLEM = "Given an integer array nums, return the sum of its elements."
BODIES = {"sum": "return sum(nums)\n",
          "max": "return max(nums)\n",
          "zero": "return 0\n",
          "skip_first": "s = 0\nfor i in range(1, len(nums)):\n    s += nums[i]\nreturn s\n"}


def _indent(text: str, pad: str) -> str:
    return "".join(pad + line for line in text.splitlines(keepends=True))


def program(body: str, *, leetcode: bool) -> str:
    """``body`` as the function ``total(nums)``, or as ``Solution.total`` when ``leetcode``."""
    doc = '"""Return the sum of nums."""\n'
    if not leetcode:
        return "def total(nums):\n" + _indent(doc + body, "    ")
    return ("from typing import List\n\n\nclass Solution:\n    def total(self, nums: List[int]) -> int:\n"
            + _indent(doc + body, "        "))


PROGRAMS = {f"{form}/{name}": program(body, leetcode=form == "leetcode")
            for form in ("function", "leetcode") for name, body in BODIES.items()}


async def scores(checkpoint: Path) -> dict[str, float]:
    engine = await ScoringEngine.start(Settings(checkpoint=checkpoint, cache_size=0, device="cpu"))
    try:
        return {name: (await engine.score_item(ScoreItem(problem=PROBLEM, code=code))).score
                for name, code in PROGRAMS.items()}
    finally:
        await engine.aclose()


def verdict(result: dict[str, float], form: str) -> tuple[bool, float]:
    """(the right program scores highest, its margin over the best wrong one) within one form."""
    right = result[f"{form}/sum"]
    wrong = max(v for k, v in result.items() if k.startswith(form + "/") and k != f"{form}/sum")
    return right > wrong, right - wrong


if __name__ == "__main__":
    result = asyncio.run(scores(Path(sys.argv[1])))
    for name, value in result.items():
        print(f"{name:22s} {value:.4f}")
    for form in ("function", "leetcode"):
        first, margin = verdict(result, form)
        print(f"{form}: right one first: {first}, margin over the best wrong one: {margin:+.4f}")
