"""Chain-of-Function (CoF) prompts: ask a policy for modular code, ``main``/entry point first.

Pure (stdlib only). Shared by the trainer's generate/label stages and the service's rerank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CODE_STOP = ("\n```",)  # the end of the code block: nothing after it is needed
TEMPLATE_STDIN = "cof-v1-stdin"
TEMPLATE_FUNCTIONAL = "cof-v1-functional"

SYSTEM = (
    "You are an expert Python programmer. Write the solution as a Chain of Functions: "
    "a sequence of small top-level functions, each with a one-line docstring saying what it does. "
    "Do not nest functions inside functions. Put the entry point first, then the helpers it calls, "
    "in the order they are used. Answer with one ```python code block and nothing else."
)

_STDIN_RULES = (
    "The program reads from standard input and writes to standard output.\n"
    "Write `def main():` first; it reads the input, calls the helpers and prints the answer. "
    "Then write each helper. End the program with:\n\nif __name__ == \"__main__\":\n    main()\n"
)

_FUNCTIONAL_RULES = (
    "Complete the starter code below. Write the entry point `{entry}` first; it should only "
    "orchestrate, calling top-level helper functions that you write after it (for a "
    "`class Solution`, the helpers may be methods of the class or top-level functions).\n\n"
    "Starter code:\n```python\n{starter}\n```\n"
)


@dataclass(frozen=True, slots=True)
class CoFPrompt:
    template: str
    messages: list[dict[str, str]]


def cof_prompt(statement: str, *, test_type: Literal["functional", "stdin"], starter_code: str | None = None,
               entry_point: str | None = None) -> CoFPrompt:
    """The chat messages asking for a CoF solution of one problem."""
    if test_type == "stdin" or not (starter_code or entry_point):
        rules, template = _STDIN_RULES, TEMPLATE_STDIN
    else:
        starter = (starter_code or f"def {entry_point}(...):").rstrip()
        rules, template = _FUNCTIONAL_RULES.format(entry=entry_point or "the entry point", starter=starter), \
            TEMPLATE_FUNCTIONAL
    user = f"Problem:\n{statement.strip()}\n\n{rules}"
    return CoFPrompt(template, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


def assistant_prefix(code_prefix: str) -> str:
    """The assistant turn's beginning when a rollout continues a program from ``code_prefix``."""
    return "```python\n" + code_prefix
