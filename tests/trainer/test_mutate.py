"""Mutants: one change in one function, the rest byte-identical; many fail the reference's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.sandbox import TestSpec, run_tests
from service.steps import split_code
from tests.conftest import shared_data
from tests.trainer.fake_policy import FakePolicy
from trainer.config import GenerateConfig
from trainer.generate import run as generate_stage
from trainer.mutate import mutants
from trainer.rundir import candidates_store, select_split

CODE = '''import sys


def main():
    """Read n; print the sum of squares below n."""
    n = int(sys.stdin.readline())
    print(total(n))


def total(n):
    """Sum of i * i for i < n, with a ünïcode comment."""
    s = 0
    for i in range(n):
        if i >= 0 and i < n:
            s += i * i
    return s


main()
'''


def test_one_function_changes_and_the_rest_is_byte_identical() -> None:
    found = mutants(CODE, count=20, seed=0)
    assert len(found) >= 6 and len({m.code for m in found}) == len(found)
    assert {"compare", "arith", "constant", "boolean"} <= {m.operator for m in found}
    original = [s.text for s in split_code(CODE).steps]
    for m in found:
        steps = [s.text for s in split_code(m.code).steps]
        assert len(steps) == len(original)
        changed = [i for i, (a, b) in enumerate(zip(original, steps, strict=True)) if a != b]
        assert changed == [m.step_index], (m.operator, m.line)
        assert steps[:m.step_index] == original[:m.step_index]  # the prefix stays correct


def test_deterministic_and_tolerant() -> None:
    assert mutants(CODE, count=5, seed=3) == mutants(CODE, count=5, seed=3)
    assert mutants("def f(:\n", count=3, seed=0) == []
    assert mutants("x = 1\n", count=3, seed=0) == []  # no function: nothing to mutate


def test_most_mutants_of_references_fail_their_tests() -> None:
    rows = [json.loads(line) for line in shared_data("leetcodedataset_train.jsonl").open()][:8]
    outcomes = []
    for row in rows:
        tests = [TestSpec(kind="assert", code=t["code"]) for t in row["public_tests"] + row["private_tests"]]
        for m in mutants(row["canonical_solution"], count=2, seed=1):
            outcomes.append(run_tests(m.code, tests, test_type="functional",
                                      setup_code=row.get("test_setup_code") or "").passed)
    assert len(outcomes) >= 10
    assert sum(outcomes) <= len(outcomes) // 2  # mutants are mostly wrong (some are equivalent)


def test_generate_stage_adds_mutants(tmp_path: Path) -> None:
    chosen = select_split(shared_data("leetcodedataset_train.jsonl"), {"train": 2})
    policy = FakePolicy([r.problem for r in chosen], p_bad=0.0)
    gen = GenerateConfig(model="fake", backend="transformers", n=1, seed=1)
    made = generate_stage(tmp_path, gen, chosen, references=True, mutants=2, policy=policy)
    cands = list(candidates_store(tmp_path).read())
    muts = [c for c in cands if c.provenance == "mutant"]
    assert made == len(cands) == 4 + len(muts)  # 2 problems x (policy sample + reference) + mutants
    assert {c.problem_id for c in muts} == {r.problem.id for r in chosen} and len(muts) <= 4
    assert all(c.policy.startswith("mutant:") and c.steps for c in muts)
    refs = {c.problem_id: c.code for c in cands if c.provenance == "reference"}
    assert all(c.code != refs[c.problem_id] for c in muts)


SUM = '''def total(nums):
    """Return the sum of nums."""
    return sum(nums)


def total_loop(nums):
    """Return the sum of nums, by a loop."""
    s = 0
    for i in range(len(nums)):
        s += nums[i]
    return s
'''


def test_plausible_bug_operators() -> None:
    """``return``, ``call`` and ``range`` write the bugs of issue 12's sum-of-nums programs."""
    found = mutants(SUM, count=20, seed=0, operators=("return", "call", "range"))
    assert sorted(m.operator for m in found) == ["call", "range", "return", "return"]
    codes = {m.code for m in found}
    assert SUM.replace("return sum(nums)", "return 0") in codes
    assert SUM.replace("return s\n", "return 0\n") in codes
    assert SUM.replace("return sum(nums)", "return max(nums)") in codes
    assert SUM.replace("range(len(nums))", "range(1, len(nums))") in codes
    for m in found:
        namespace: dict[str, Any] = {}
        exec(m.code, namespace)  # our own mutant of our own code
        assert (namespace["total"]([4, 1, 2]), namespace["total_loop"]([4, 1, 2])) != (7, 7)


def test_mutants_are_drawn_across_operators() -> None:
    """Round-robin: the first mutants come from different operators although comparisons and arithmetic
    have the most sites; an unknown operator is refused."""
    first = mutants(CODE, count=4, seed=0)
    assert len({m.operator for m in first}) == 4
    assert {m.operator for m in mutants(CODE, count=30, seed=0)} == {
        "compare", "arith", "constant", "boolean", "return", "range"}  # CODE calls no swappable builtin
    with pytest.raises(ValueError, match="unknown mutant operators"):
        mutants(CODE, count=1, seed=0, operators=("flip",))
    with pytest.raises(ValueError, match="mutant_operators"):
        GenerateConfig(model="none", n=0, mutant_operators=("flip",))
