"""The Python splitter, fenced-code extraction, and the byte-for-byte invariant."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidInput
from service.steps import Step, extract_code, split_code, split_steps, steps_from_texts
from tests.conftest import shared_data

COF = '''import sys
from typing import List

MOD = 10**9 + 7


# entry point
def main():
    """Read input and print the answer."""
    data = sys.stdin.read().split()

    def inner(x):
        return x + 1

    print(solve([int(x) for x in data]))


@functools.cache
@other
def solve(xs: List[int]) -> int:
    """Sum modulo MOD."""
    return sum(xs) % MOD


async def fetch():
    """Not used."""
    await something()


if __name__ == "__main__":
    main()
'''


def kinds(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.kind, s.name) for s in steps]


def check_invariants(code: str, steps: list[Step]) -> None:
    assert "".join(s.text for s in steps) == code
    raw = code.encode("utf-8", "surrogatepass")
    byte = 0
    for i, s in enumerate(steps):
        assert s.index == i
        assert s.start_byte == byte and s.end_byte >= s.start_byte
        assert raw[s.start_byte:s.end_byte] == s.text.encode("utf-8", "surrogatepass")
        assert 1 <= s.start_line <= s.end_line
        byte = s.end_byte
    assert byte == len(raw)


def test_cof_program_steps() -> None:
    steps = split_steps(COF)
    assert kinds(steps) == [("preamble", "preamble"), ("function", "main"), ("function", "solve"),
                            ("function", "fetch"), ("epilogue", "epilogue")]
    check_invariants(COF, steps)
    main, solve = steps[1], steps[2]
    assert main.text.startswith("# entry point\ndef main():")  # comment above belongs to it
    assert "def inner" in main.text  # nested functions stay with their parent
    assert solve.text.startswith("@functools.cache\n@other\ndef solve")  # decorators too
    assert steps[0].text == "import sys\nfrom typing import List\n\nMOD = 10**9 + 7\n\n\n"
    assert steps[-1].text.strip() == 'if __name__ == "__main__":\n    main()'
    assert (main.start_line, main.end_line) == (7, 17)  # trailing blank lines included


def test_leetcode_class_methods() -> None:
    code = ("from typing import List\n\nclass Solution:\n    LIMIT = 3\n\n"
            "    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        return self._h(nums)\n\n"
            "    @staticmethod\n    def _h(nums):\n        return [0, 1]\n")
    steps = split_steps(code)
    assert kinds(steps) == [("preamble", "preamble"), ("method", "Solution.twoSum"), ("method", "Solution._h")]
    assert steps[0].text.endswith("LIMIT = 3\n\n")
    assert steps[2].text.startswith("    @staticmethod\n")
    check_invariants(code, steps)


def test_no_functions_is_one_step_and_blank_edges_merge() -> None:
    assert kinds(split_steps("print(int(input()) * 2)\n")) == [("preamble", "preamble")]
    code = "\n\ndef f():\n    return 1\n\n\n"
    steps = split_steps(code)
    assert kinds(steps) == [("function", "f")]
    assert steps[0].text == code


def test_crlf_and_unicode() -> None:
    code = "import os\r\n\r\ndef é():\r\n    return 'ü'\r\n\r\ndef g():\r\n    pass"
    steps = split_steps(code)
    assert kinds(steps) == [("preamble", "preamble"), ("function", "é"), ("function", "g")]
    check_invariants(code, steps)
    assert steps[1].start_byte == len(b"import os\r\n\r\n")


def test_unparsable_code_falls_back() -> None:
    code = "import x\n\ndef main():\n    solve(\n\n@dec\ndef solve():\n    return [1,\n\nmain()\n"
    result = split_code(code)
    assert result.parsed is False
    assert kinds(result.steps) == [("preamble", "preamble"), ("function", "main"), ("function", "solve"),
                                   ("epilogue", "epilogue")]
    assert result.steps[2].text.startswith("@dec\n")
    check_invariants(code, result.steps)
    cls = "class Solution:\n    def a(self):\n        return (\n    def b(self):\n        pass\n"
    assert kinds(split_code(cls).steps) == [("preamble", "preamble"), ("method", "Solution.a"),
                                            ("method", "Solution.b")]


@pytest.mark.parametrize(("code", "message"), [
    ("", "empty"), ("   \n\t\n", "empty"), ("# only\n# comments\n", "no statements"),
    ("def f():\n    return '\x00'\n", "NUL"), ("-" * 200_000 + "1", "nests too deeply"),
    ("not " * 100_000 + "x", "nests too deeply"),
])
def test_bad_code_is_invalid_input(code: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        split_code(code)


def test_deep_brackets_fall_back() -> None:
    code = "x = " + "[" * 100_000  # the parser refuses it as a syntax error: scored unparsed
    result = split_code(code)
    assert result.parsed is False
    check_invariants(code, result.steps)


def test_unknown_language() -> None:
    with pytest.raises(InvalidInput, match="unknown language 'cobol'"):
        split_code("x", "cobol")


def test_ten_thousand_functions() -> None:
    code = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(10_000))
    steps = split_steps(code)
    assert len(steps) == 10_000
    check_invariants(code, steps)


_PIECES = st.sampled_from([
    "def f(x):\n", "async def g():\n", "class A:\n", "    def m(self):\n", "    return x\n",
    "        pass\n", "@dec\n", "# comment\n", "\n", "\r\n", "\r", "x = (1,\n", ")\n", "if y:\n",
    "print('é')\n", "'''doc\n", "\t", " ", "é", "\\\n", "main()\n", '"""\n', "\x0c", "\u2028",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=40).map("".join))
def test_concatenation_invariant_property(code: str) -> None:
    try:
        result = split_code(code)
    except InvalidInput:
        return
    check_invariants(code, result.steps)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=300))
def test_concatenation_invariant_arbitrary_text(code: str) -> None:
    try:
        result = split_code(code)
    except InvalidInput:
        return
    check_invariants(code, result.steps)


@pytest.mark.parametrize("name", ["leetcodedataset_train.jsonl", "leetcodedataset_test_shared.jsonl",
                                  "humaneval.jsonl", "humanevalplus.jsonl", "mbpp.jsonl",
                                  "mbpp_sanitized.jsonl", "mbppplus.jsonl"])
def test_every_reference_solution_splits(name: str) -> None:
    n_solutions = n_functions = 0
    with shared_data(name).open() as fh:
        for line in fh:
            problem = json.loads(line)
            solution = problem.get("canonical_solution") or ""
            # HumanEval's canonical solution is a function body: the program is prompt + body
            code = problem["prompt"] + solution if problem["source"].startswith("humaneval") else solution
            if not code.strip():
                continue
            result = split_code(code)
            check_invariants(code, result.steps)
            assert result.parsed, problem["id"]
            n_solutions += 1
            n_functions += sum(s.kind in ("function", "method") for s in result.steps)
    assert n_solutions > 100
    assert n_functions >= n_solutions  # every reference solution has at least one function


def test_extract_code() -> None:
    reply = "Plan.\n```text\nnot code\n```\n```python\ndef a():\n    pass\n```\nThen\n```py\ndef b():\n    pass\n```\n"
    assert extract_code(reply) == "def b():\n    pass\n"
    assert extract_code("```\ndef c(): pass\n```") == "def c(): pass\n"
    assert extract_code("```python\ndef cut(:\n    retu") == "def cut(:\n    retu"  # truncated reply
    assert extract_code("def plain(): pass") == "def plain(): pass"
    assert extract_code("```js\nfunction f() {}\n```\n```python\nx=1\n```", "javascript") == "function f() {}\n"


def test_steps_from_texts() -> None:
    steps = steps_from_texts(["import os\n\n", "def f():\n    pass\n", "f()"])
    assert [(s.start_line, s.end_line) for s in steps] == [(1, 2), (3, 4), (5, 5)]
    assert [s.name for s in steps] == ["step_0", "step_1", "step_2"]
    check_invariants("import os\n\ndef f():\n    pass\nf()", steps)
    with pytest.raises(InvalidInput, match="NUL"):
        steps_from_texts(["a\x00"])


def test_parallel_splits_do_not_break_the_ast_builder() -> None:
    """CPython 3.11 raises SystemError when two threads build ASTs at once; the splitter serialises
    parsing. The GC callback releases the GIL mid-parse, which reproduces the race without the lock."""
    import gc
    import time
    from concurrent.futures import ThreadPoolExecutor

    codes = [f"class Solution:\n    def f{i}(self, xs):\n        return [[(a, b) for a in xs if a] for b in xs]\n"
             "\n\ndef helper(x):\n    return {k: [v for v in range(k)] for k in range(x)}\n" for i in range(16)]
    callback = lambda phase, info: time.sleep(0) if phase == "start" else None  # noqa: E731
    threshold = gc.get_threshold()
    gc.set_threshold(5, 1, 1)
    gc.callbacks.append(callback)
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: split_code(codes[i % 16]).parsed, range(400)))
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
    assert all(results)


@pytest.mark.parametrize(("code", "context"), [
    # LeetCode: imports and the class header are context, the method is the step
    ("from typing import List\n\nclass Solution:\n    def f(self, a: List[int]) -> int:\n        return sum(a)\n",
     [True, False]),
    # CoF: a main() call under the guard is context
    ("import sys\n\ndef main():\n    print(1)\n\nif __name__ == '__main__':\n    main()\n", [True, False, True]),
    # constants, a fast input, recursion limit: context
    ("import sys\ninput = sys.stdin.readline\nMOD = 10**9 + 7\nsys.setrecursionlimit(1 << 20)\n\ndef solve(n):\n"
     "    return n % MOD\n\nprint(solve(7))\n", [True, False, True]),
    # a stdin program's main code after its helpers reads and computes: a step like a function
    ("def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n\nn = int(input())\n"
     "xs = list(map(int, input().split()))\ng = 0\nfor x in xs:\n    g = gcd(g, x)\nprint(g)\n", [False, False]),
    # no function at all: the whole program is its one step
    ("n = int(input())\nprint(n * 2)\n", [False]),
])
def test_context_is_module_code_without_logic(code: str, context: list[bool]) -> None:
    assert [s.context for s in split_steps(code)] == context


def test_step_records_written_before_context_get_the_same_rule() -> None:
    from service.schemas import StepOut

    code = "import sys\n\ndef main():\n    pass\n\nn = int(input())\nfor _ in range(n):\n    main()\n"
    for step in split_steps(code):
        record = StepOut.model_validate(step).model_dump()
        del record["context"]
        assert StepOut.model_validate(record).context == step.context
    assert [s.context for s in split_steps(code)] == [True, False, False]
