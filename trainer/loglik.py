"""The untrained baseline of issue 12: the base model's mean token log-likelihood of a program given its problem.

A verifier must beat it: a model that only prefers fluent, likely code is no verifier. The text is the PRM's
own template without separators (``service.encoding`` headers), so the baseline sees what the PRM sees.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from service.encoding import PROBLEM_HEADER, SOLUTION_HEADER


@torch.inference_mode()
def mean_loglik(model: torch.nn.Module, tokenizer: object, problem: str, codes: Sequence[str], *,
                max_tokens: int = 2048) -> list[float]:
    """Mean log p(code token | problem, earlier code) per program (the problem's head is cut when too long).

    The problem prefix goes through the model once per call: its key/value cache is reused (copied) for every
    program that fits after the whole prefix, so a problem's candidates cost their own tokens only; a program
    that needs the prefix cut is scored on its own. Only the code positions' logits are made (a 262k-token
    vocabulary over a 2,048-token prefix would be 2 GB)."""
    encode = tokenizer.encode  # type: ignore[attr-defined]
    prefix = encode(PROBLEM_HEADER + problem + SOLUTION_HEADER, add_special_tokens=False)
    shared: tuple[object, torch.Tensor] | None = None  # (cache after the whole prefix, its last position's logits)
    out: list[float] = []
    for code in codes:
        code_ids = encode(code, add_special_tokens=False)[: max_tokens - 1]
        if not code_ids:
            out.append(float("-inf"))
            continue
        if len(prefix) + len(code_ids) <= max_tokens:
            if shared is None:
                first = model(input_ids=torch.tensor([prefix]), use_cache=True, logits_to_keep=1)
                shared = (first.cache, first.logits[0, -1:].float())
            rest = model(input_ids=torch.tensor([code_ids]), cache=copy.deepcopy(shared[0]),
                         use_cache=True).logits[0, :-1].float()
            logits = torch.cat([shared[1], rest])  # (C, V): predicts each code token
        else:
            keep = max(1, max_tokens - len(code_ids))
            ids = torch.tensor([prefix[-keep:] + code_ids])  # (1, T)
            logits = model(input_ids=ids, logits_to_keep=len(code_ids) + 1).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(code_ids)[:, None])  # (C, 1)
        out.append(float(logp.mean()))
    return out
