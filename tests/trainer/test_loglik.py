"""The log-likelihood baseline: the problem prefix's cache reused across programs gives what one full forward
pass per program gives."""

from __future__ import annotations

import pytest
import torch

from service.encoding import PROBLEM_HEADER, SOLUTION_HEADER
from tests.tiny import tiny_gemma3, tiny_lm
from trainer.loglik import mean_loglik


def _one_pass_each(model: torch.nn.Module, tok: object, problem: str, codes: list[str], max_tokens: int
                   ) -> list[float]:
    """The definition, one full forward pass per program: prefix (head cut to fit) + code."""
    prefix = tok.encode(PROBLEM_HEADER + problem + SOLUTION_HEADER, add_special_tokens=False)  # type: ignore
    out = []
    for code in codes:
        ids = tok.encode(code, add_special_tokens=False)[: max_tokens - 1]  # type: ignore[attr-defined]
        full = (prefix + ids)[-max_tokens:] if len(prefix) + len(ids) > max_tokens else prefix + ids
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
        n = len(full)
        out.append(float(torch.stack([logp[t - 1, full[t]] for t in range(n - len(ids), n)]).mean()))
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_the_shared_prefix_gives_each_programs_own_likelihood(arch: str) -> None:
    model, tok = tiny_lm(hidden=32, layers=2, seed=3) if arch == "llama" else tiny_gemma3()
    model.eval()
    problem = "Given an array of integers nums, return the sum of its positive numbers. " * 3
    codes = ["def helper(xs):\n    return sum(x for x in xs if x > 0)\n",
             "def main():\n    n = int(input())\n    print(n)\n",
             "",  # nothing to score
             "import sys\nfor i in range(10):\n    continue\n" * 4]  # long: needs the prefix cut below
    got = mean_loglik(model, tok, problem, codes, max_tokens=120)
    assert got[2] == float("-inf")
    want = _one_pass_each(model, tok, problem, [c for c in codes if c], max_tokens=120)
    assert [got[0], got[1], got[3]] == pytest.approx(want, abs=1e-5)
    assert len(set(got)) == 4  # the programs differ, so do their values
    # the same program alone and among others: the cache copy is not changed by the programs before it
    assert mean_loglik(model, tok, problem, codes[1:2], max_tokens=120) == pytest.approx(got[1:2], abs=1e-6)
