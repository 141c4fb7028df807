"""OpenRLHF's remote reward-model contract (``POST /get_reward``): texts in, one reward per text.

A query is the prompt followed by the policy's response. The problem is the prompt (from ``prompts``
when the caller sends it, else the text before the response's first code fence) and the program is
the response's fenced code (or the whole response).
"""

from __future__ import annotations

from service.aggregate import Aggregation
from service.errors import InvalidInput
from service.schemas import RewardRequest, ScoreItem
from service.steps import extract_code

FENCE = "```"


def reward_items(req: RewardRequest, aggregation: Aggregation | None) -> list[ScoreItem | str]:
    """One score item per query, or the reason a query cannot be scored (it then gets reward 0)."""
    if req.prompts is not None and len(req.prompts) != len(req.query):
        raise InvalidInput(f"{len(req.prompts)} prompts for {len(req.query)} queries")
    items: list[ScoreItem | str] = []
    for i, query in enumerate(req.query):
        prompt = req.prompts[i] if req.prompts is not None else None
        if prompt is not None and query.startswith(prompt):
            problem, response = prompt, query[len(prompt):]
        else:
            cut = query.find(FENCE)
            problem, response = (query[:cut], query[cut:]) if cut > 0 else ("", query)
        code = extract_code(response)
        if not code.strip():
            items.append("no code in the response")
            continue
        items.append(ScoreItem(problem=problem.strip(), code=code, aggregation=aggregation))
    return items
