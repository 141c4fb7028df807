"""service.sandbox.examples: every example form, the skip-and-count rule, and hostile statements (bounded work)."""

from __future__ import annotations

import time

import pytest

from service.sandbox.examples import MAX_SCAN_CHARS, extract_examples

HUMANEVAL = '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """ Detect if the balance ever falls below zero.
    >>> below_zero([1, 2, 3])
    False
    >>> below_zero([1, 2, -4, 5])
    True
    """
'''

LEETCODE = """Given an array of integers nums and an integer target, return indices of the two numbers.

Example 1:

Input: nums = [2,7,11,15], target = 9
Output: [0,1]
Explanation: Because nums[0] + nums[1] == 9, we return [0, 1].

Example 2:

Input: nums = [3,2,4], target = 6
Output: [1,2]
"""
LEETCODE_STUB = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        "

APPS = """Print the winner of each game.

-----Input-----

The first line contains t.

-----Output-----

For each game, print T or HL.

-----Example-----
Input
2
1
2
2
1 1

Output
T
HL



-----Note-----

In the first game T wins.
"""


def codes(problem: str, **kw: object) -> list[str | None]:
    return [e.code for e in extract_examples(problem, **kw).examples]  # type: ignore[arg-type]


def test_doctest_blocks() -> None:
    ex = extract_examples(HUMANEVAL)
    assert ex.test_type == "functional" and ex.entry_point == "below_zero"
    assert [e.code for e in ex.examples] == ["assert below_zero([1, 2, 3]) == False",
                                             "assert below_zero([1, 2, -4, 5]) == True"]
    assert ex.examples[0].form == "doctest" and ">>> below_zero([1, 2, 3])" in ex.examples[0].text


@pytest.mark.parametrize("line", ["f(3) == 6", "f(3) ➞ 6", "f(3) -> 6", "f(3) => 6", "f(3) ==> 6",
                                  "f(3) should return 6", "* f(3) => 6", "assert f(3)==6", "f(3)   # returns 6",
                                  "`f(3) ➞ 6`", ">>> f(3) == 6"])
def test_inline_forms(line: str) -> None:
    problem = f'def f(n):\n    """Triple n.\n    {line}\n    """\n'
    assert codes(problem) == ["assert f(3) == 6"]


def test_inline_json_booleans_and_floats() -> None:
    problem = "def g(x, n):\n    '''\n    g(8, 2) => true\n    g(0.5, 1) == 0.25\n    '''\n"
    assert codes(problem) == ["assert g(8, 2) == True",
                              "assert abs((g(0.5, 1)) - 0.25) <= 1e-6 * max(1.0, abs(0.25))"]


def test_leetcode_blocks_map_onto_the_method_by_name() -> None:
    got = codes(LEETCODE, starter_code=LEETCODE_STUB)
    # positional in the stub's order (a reference may rename its parameters)
    assert got == ["assert Solution().twoSum([2,7,11,15], 9) == [0,1]",
                   "assert Solution().twoSum([3,2,4], 6) == [1,2]"]
    swapped = LEETCODE.replace("nums = [2,7,11,15], target = 9", "target = 9, nums = [2,7,11,15]")
    assert codes(swapped, starter_code=LEETCODE_STUB)[0] == "assert Solution().twoSum([2,7,11,15], 9) == [0,1]"
    assert codes(LEETCODE, entry_point="twoSum")[0] == "assert twoSum(nums=[2,7,11,15], target=9) == [0,1]"


def test_leetcode_values_true_false_null_strings_nested() -> None:
    stub = "class Solution:\n    def f(self, grid: List[List[int]], s: str, ok: bool) -> Optional[bool]:\n"
    problem = 'Example 1:\nInput: grid = [[1,0],[0,1]], s = "a,b true", ok = false\nOutput: null\n'
    assert codes(problem, starter_code=stub) == \
        ['assert Solution().f([[1,0],[0,1]], "a,b true", False) == None']


def test_leetcode_blocks_that_do_not_fit_are_skipped_and_counted() -> None:
    stub = "class Solution:\n    def f(self, head: Optional[ListNode], k: int) -> int:\n"
    problem = ("Input: head = [1,2,3], k = 2\nOutput: 3\n"          # a ListNode parameter: no literal maps onto it
               "Input: k = 2, other = 1\nOutput: 3\n"              # names that are not the parameters
               "Input: head = [1, k = 2\nOutput: 3\n")             # unbalanced
    ex = extract_examples(problem, starter_code=stub)
    assert ex.examples == [] and ex.skipped == 3


def test_stdin_example_block_not_the_format_sections() -> None:
    ex = extract_examples(APPS, test_type="stdin")
    assert ex.test_type == "stdin"
    assert [(e.input, e.output) for e in ex.examples] == [("2\n1\n2\n2\n1 1\n", "T\nHL\n")]


def test_sample_input_output_numbered() -> None:
    problem = ("Read a and b.\n\nSample Input 1\n1 2\n\nSample Output 1\n3\n\n"
               "Sample Input 2\n5 5\nSample Output 2\n10\n")
    ex = extract_examples(problem)
    assert ex.test_type == "stdin"
    assert [(e.input, e.output) for e in ex.examples] == [("1 2\n", "3\n"), ("5 5\n", "10\n")]


def test_example_input_output_headers() -> None:
    problem = "Sum.\nExample input:\n1 2\nExample output:\n3\n"
    assert [(e.input, e.output) for e in extract_examples(problem).examples] == [("1 2\n", "3\n")]


def test_any_order_compares_sorted_and_tree_results_are_skipped() -> None:
    stub = "class Solution:\n    def f(self, n: int) -> List[int]:\n"
    assert codes("Return them in any order.\nInput: n = 2\nOutput: [2,1]\n", starter_code=stub) == \
        ["assert sorted(Solution().f(2)) == sorted([2,1])"]
    tree = "class Solution:\n    def build(self, n: int) -> Optional[TreeNode]:\n"
    ex = extract_examples("Input: n = 2\nOutput: [2,null,1]\n", starter_code=tree)
    assert ex.examples == [] and ex.skipped == 1


def test_for_x_the_output_should_be() -> None:
    problem = ('def f(lst):\n    """\n    For lst = [1,2,3] the output should be 6\n'
               '    For lst = [] the output should be 0\n')
    assert codes(problem) == ["assert f([1,2,3]) == 6", "assert f([]) == 0"]


def test_plain_equals_counts_only_in_examples_and_comments_are_dropped() -> None:
    problem = ('def tri(n):\n    """\n    tri(1) = 3\n    Examples:\n    tri(3) = [1, 3, 2, 8]\n'
               '    >>> round(tri(0)[0], 2) # the first value\n    1\n    """\n')
    assert codes(problem) == ["assert round(tri(0)[0], 2) == 1", "assert tri(3) == [1, 3, 2, 8]"]


def test_never_invents_an_example() -> None:
    problem = "def f(x):\n    '''Return something clever. For example f(3) is big.\n    f(2) == something\n'''\n"
    ex = extract_examples(problem)
    assert ex.examples == [] and ex.skipped == 1
    assert extract_examples("Print hello.").examples == []
    prose = 'def is_happy(s):\n    """\n    is_happy(a) => False\n    is_happy(root) => True\n    """\n'
    assert extract_examples(prose).examples == []  # unquoted names: prose, not Python


def test_starter_code_gives_the_entry_point_and_the_class() -> None:
    problem = "Example 1:\nInput: n = 3\nOutput: 6\n"
    assert codes(problem, starter_code="class Solution:\n    def triple(self, n: int) -> int:\n") == \
        ["assert Solution().triple(3) == 6"]
    assert codes("Input: 3\nOutput: 6\n", starter_code="def triple(n):\n") == ["assert triple(3) == 6"]


def test_duplicates_and_the_example_limit() -> None:
    problem = "def f(n):\n    '''\n" + "".join(f"    f({i % 30}) == {i % 30}\n" for i in range(100)) + "    '''\n"
    ex = extract_examples(problem, max_examples=16)
    assert len(ex.examples) == 16 and ex.truncated


# --- hostile statements ------------------------------------------------------------------------


def _bounded(problem: str, limit_s: float = 10.0, **kw: object) -> float:
    start = time.perf_counter()
    extract_examples(problem, **kw)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"extraction took {elapsed:.2f}s"
    return elapsed


def test_one_megabyte_statement_is_bounded() -> None:
    _bounded(("lorem ipsum f(1) == 2 " * 50 + "\n") * (MAX_SCAN_CHARS // 1100))
    _bounded("x" * (1 << 20))  # one 1 MB line
    _bounded("(" * (1 << 20))  # unbalanced brackets
    ex = extract_examples("def f(x):\n    '''\n    f(1) == 2\n    '''\n" + "a" * (3 * MAX_SCAN_CHARS))
    assert ex.truncated and len(ex.examples) == 1


def test_ten_thousand_example_headers() -> None:
    problem = "Solve it.\n" + "Example\nInput\n1\nOutput\n2\n\n" * 10_000
    _bounded(problem)
    ex = extract_examples(problem, test_type="stdin")
    assert len(ex.examples) == 1 and ex.examples[0].input == "1\n" and ex.truncated  # folded; scan stopped
    _bounded("Example 1:\n" * 10_000 + "Input: n = 1\n" * 10_000, starter_code="def f(n):\n")


def test_ten_megabyte_expected_output_is_skipped() -> None:
    big = "9" * (10 << 20)
    ex = extract_examples(f"def f(n):\n    '''\n    f(1) == {big}\n    '''\n")
    assert ex.examples == []  # past the scan limit: never parsed, never sent to the sandbox
    ex = extract_examples(f"Example\nInput\n1\nOutput\n{'7' * (1 << 16)}\n", test_type="stdin")
    assert ex.examples == [] and ex.skipped == 1


def test_deeply_nested_literal_is_skipped_not_a_crash() -> None:
    ex = extract_examples("def f(x):\n    '''\n    f(1) == " + "[" * 5000 + "]" * 5000 + "\n    '''\n")
    assert ex.examples == []


def test_os_system_in_an_example_is_never_evaluated(tmp_path: pytest.TempPathFactory) -> None:
    marker = f"{tmp_path}/pwned"
    problem = f"def f(x):\n    '''\n    >>> f(__import__('os').system('touch {marker}'))\n    0\n    '''\n"
    ex = extract_examples(problem)
    assert len(ex.examples) == 1 and "os" in (ex.examples[0].code or "")  # a test; it runs only in the sandbox
    import os

    assert not os.path.exists(marker)
