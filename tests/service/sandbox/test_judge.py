"""service.sandbox.judge: which asserts are split, and the value round trip through the runner's encoder."""

from __future__ import annotations

import math
from collections import Counter, OrderedDict

import pytest

from service.sandbox.judge import JudgedTest, decode_value, judge_test, verdict
from service.sandbox.runner import encode_value


@pytest.mark.parametrize(("code", "mode", "inside"), [
    ("assert Solution().twoSum(nums=[2, 7], target=9) == [0, 1]", "equal", "Solution().twoSum(nums=[2, 7], target=9)"),
    ("assert [0, 1] == f(3)", "equal", "f(3)"),
    ("assert f(3)", "truthy", "f(3)"),
    ("assert not f(3)", "falsy", "f(3)"),
    ("assert False", "equal", "True"),
    ("assert abs(f(1) - 0.5) < 1e-6", "code", "assert abs(f(1) - 0.5) < 1e-6"),
    ("assert f(1) == inf", "code", "assert f(1) == inf"),
    ("assert f(1) == 2, 'message'", "code", "assert f(1) == 2, 'message'"),
    ("def check(c):\n    assert c(1) == 2\ncheck(f)", "code", "def check(c):\n    assert c(1) == 2\ncheck(f)"),
    ("assert (", "code", "assert ("),
])
def test_judge_test_splits_only_literal_comparisons(code: str, mode: str, inside: str) -> None:
    judged = judge_test(code)
    assert (judged.mode, judged.inside) == (mode, inside)
    if mode == "equal" and inside != "True":
        assert "expected" not in str(judged.payload()) and str(judged.expected) not in str(judged.payload())


@pytest.mark.parametrize("value", [
    None, True, 0, -3, 2**80, 1.5, math.inf, "s", b"\x00b", 1 + 2j, [1, [2, (3, 4)]], (1,), {1, 2},
    frozenset({"a"}), {"k": [1], 2: (3,)}, Counter("aab"), OrderedDict(a=1),
])
def test_values_survive_the_encoding(value: object) -> None:
    assert decode_value(encode_value(value)) == value


def test_lookalikes_do_not_equal_the_expected_value() -> None:
    class AlwaysEqual:
        def __eq__(self, other: object) -> bool:
            return True

    assert decode_value(encode_value(AlwaysEqual())) != 1
    assert decode_value(encode_value((1, 2))) != [1, 2]  # as in Python: a tuple is not a list
    assert decode_value({"bogus": 1}) != 1 and decode_value({"set": [[1]]}) != {1}


def test_verdict_needs_a_value_for_a_value_test() -> None:
    test = JudgedTest("equal", "f(1)", 2)
    assert verdict(test, {"ev": "test", "i": 0, "ok": True})[0] is False  # a forged "ok" is not a value
    assert verdict(test, {"ev": "test", "i": 0, "v": 2})[0] is True
    assert verdict(test, {"ev": "test", "i": 0, "v": 3})[:2] == (False, "wrong_answer")
    assert verdict(JudgedTest("truthy", "f(1)"), {"v": True})[0] is True
    assert verdict(JudgedTest("falsy", "f(1)"), {"v": True})[0] is False
    assert verdict(JudgedTest("code", "assert x"), {"ok": True})[0] is True
