"""Issue 12's first finding, re-checked for any checkpoint: the served score (``ScoringEngine``, the checkpoint's
default aggregation) of four programs for "return the sum of nums"; only ``sum`` is right.

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
_DOC = '    """Return the sum of nums."""\n'
PROGRAMS = {"sum": f"def total(nums):\n{_DOC}    return sum(nums)\n",
            "max": f"def total(nums):\n{_DOC}    return max(nums)\n",
            "zero": f"def total(nums):\n{_DOC}    return 0\n",
            "skip_first": f"def total(nums):\n{_DOC}    s = 0\n    for i in range(1, len(nums)):\n"
                          "        s += nums[i]\n    return s\n"}


async def scores(checkpoint: Path) -> dict[str, float]:
    engine = await ScoringEngine.start(Settings(checkpoint=checkpoint, cache_size=0, device="cpu"))
    try:
        return {name: round((await engine.score_item(ScoreItem(problem=PROBLEM, code=code))).score, 4)
                for name, code in PROGRAMS.items()}
    finally:
        await engine.aclose()


if __name__ == "__main__":
    result = asyncio.run(scores(Path(sys.argv[1])))
    print(sys.argv[1], result, "right one first:", max(result, key=result.__getitem__) == "sum")
