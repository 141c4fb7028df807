"""Request examples for the OpenAPI document: what Swagger UI's "Try it out" sends, and ReDoc shows.

Plain data (every example is a valid request; ``tests/service/http/test_web_docs.py`` posts each one).
Each body gives ``code`` or ``steps``, never both.
"""

from __future__ import annotations

from typing import Any

Example = dict[str, Any]  # an OpenAPI Example Object: {"summary": ..., "value": ...}

_SUM_PROBLEM = "Given an integer array nums, return the sum of its elements."
_SUM_CODE = "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)\n"
_STDIN_PROBLEM = "Read two integers and print their sum."
_STDIN_CODE = ("def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n"
               "def add(a, b):\n    return a + b\n\nmain()\n")

REQUEST_EXAMPLES: dict[str, dict[str, Example]] = {
    "/v1/split": {
        "python": {"summary": "a Python program", "value": {
            "code": "import sys\n\ndef main():\n    print(add(1, 2))\n\ndef add(a, b):\n    return a + b\n\nmain()\n"}},
        "javascript": {"summary": "a JavaScript program (tree-sitter)", "value": {
            "code": "function add(a, b) {\n  return a + b;\n}\n\nconsole.log(add(1, 2));\n", "language": "javascript"}},
    },
    "/v1/score": {
        "code": {"summary": "one program (the service splits it)", "value": {
            "problem": _SUM_PROBLEM, "code": _SUM_CODE}},
        "aggregation": {"summary": "a stdin program, ranked by its weakest step", "value": {
            "problem": _STDIN_PROBLEM, "code": _STDIN_CODE, "aggregation": "min"}},
        "steps": {"summary": "ready-made steps instead of code", "value": {
            "problem": "Return 2.", "steps": ["def f():\n", "    return 1 + 1\n"]}},
        "batch": {"summary": "a batch of items", "value": {"items": [
            {"problem": "Return 2.", "code": "def f():\n    return 2\n"},
            {"problem": "Return 2.", "code": "def f():\n    return 3\n"}], "aggregation": "mean"}},
    },
    "/v1/rerank": {
        "candidates": {"summary": "rank given programs; stdin tests run in the sandbox", "value": {
            "problem": _STDIN_PROBLEM,
            "candidates": ["a, b = map(int, input().split())\nprint(a + b)\n", "print(0)\n"],
            "public_tests": [{"input": "1 2\n", "output": "3\n"}]}},
        "asserts": {"summary": "function programs checked by asserts", "value": {
            "problem": "Write add(a, b) that returns the sum of a and b.",
            "candidates": ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"],
            "public_tests": [{"code": "assert add(1, 2) == 3"}]}},
        "generate": {"summary": "let the policy write n candidates", "value": {
            "problem": "Read n and print n squared.", "n": 2, "policy": {"temperature": 0.7, "max_tokens": 512}}},
    },
    "/get_reward": {
        "query": {"summary": "OpenRLHF: prompt + response texts", "value": {
            "query": ["Return 2.\n```python\ndef f():\n    return 2\n```"]}},
    },
}
