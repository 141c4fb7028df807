"""Append the served checks of a recipe run (``served_verify.md``, ``sum_of_nums.txt``) to the exported model
card, replacing those of an earlier run: ``python scripts/append_served_check.py CARD SERVED_MD SUMS_TXT``."""

from __future__ import annotations

import sys
from pathlib import Path

MARK = "\n## Served check\n"


def append(card: Path, served: Path, sums: Path) -> None:
    report = served.read_text().removeprefix("# Served verifier report\n").replace("\n# ", "\n### ")
    text = (card.read_text().split(MARK)[0].rstrip("\n") + "\n" + MARK + report.rstrip("\n")
            + "\n\n### Sum of nums (`benchmarks.sum_of_nums`)\n\n```\n" + sums.read_text().rstrip("\n") + "\n```\n")
    card.write_text(text)


if __name__ == "__main__":
    append(*(Path(p) for p in sys.argv[1:4]))
