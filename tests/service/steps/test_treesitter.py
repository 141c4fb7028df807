"""Tests of the tree-sitter anchors (``service.steps.treesitter``) through ``service.steps``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import InvalidInput
from service.steps import Step, split_code, split_steps

JS = """\
const fs = require("fs");

// Adds two numbers.
function add(a, b) {
  return a + b;
}

class Solution {
  twoSum(nums, target) {
    const seen = new Map();
    for (let i = 0; i < nums.length; i++) {
      const j = seen.get(target - nums[i]);
      if (j !== undefined) return [j, i];
      seen.set(nums[i], i);
    }
    return [];
  }

  maxProfit(prices) {
    let best = 0, low = Infinity;
    for (const p of prices) { low = Math.min(low, p); best = Math.max(best, p - low); }
    return best;
  }
}

function main() {
  console.log(new Solution().twoSum([2, 7, 11], add(4, 5)));
}

main();
"""

TS = """\
import { readFileSync } from "fs";

const square = (x: number): number => x * x;

export class Solution {
  private memo: Map<number, number> = new Map();

  /** Fibonacci with memoisation. */
  fib(n: number): number {
    if (n < 2) return n;
    const hit = this.memo.get(n);
    if (hit !== undefined) return hit;
    const v = this.fib(n - 1) + this.fib(n - 2);
    this.memo.set(n, v);
    return v;
  }

  area(r: number): number {
    return Math.PI * square(r);
  }
}

function main(): void {
  console.log(new Solution().fib(10), readFileSync);
}

main();
"""

JAVA = """\
import java.util.HashMap;
import java.util.Map;

class Solution {
    private final Map<Integer, Integer> seen = new HashMap<>();

    // Indices of the two numbers that add up to target.
    public int[] twoSum(int[] nums, int target) {
        for (int i = 0; i < nums.length; i++) {
            Integer j = seen.get(target - nums[i]);
            if (j != null) return new int[] {j, i};
            seen.put(nums[i], i);
        }
        return new int[0];
    }

    @SuppressWarnings("unused")
    public int maxProfit(int[] prices) {
        int best = 0, low = Integer.MAX_VALUE;
        for (int p : prices) { low = Math.min(low, p); best = Math.max(best, p - low); }
        return best;
    }
}

public class Main {
    public static void main(String[] args) {
        System.out.println(new Solution().maxProfit(new int[] {7, 1, 5}));
    }
}
"""

CPP = """\
#include <iostream>
#include <vector>
using namespace std;

static int gcd(int a, int b) {
    return b == 0 ? a : gcd(b, a % b);
}

class Solution {
public:
    vector<int> twoSum(vector<int>& nums, int target) {
        for (size_t i = 0; i < nums.size(); ++i)
            for (size_t j = i + 1; j < nums.size(); ++j)
                if (nums[i] + nums[j] == target) return {(int)i, (int)j};
        return {};
    }

    int maxProfit(const vector<int>& prices) {
        int best = 0, low = 1 << 30;
        for (int p : prices) { low = min(low, p); best = max(best, p - low); }
        return best;
    }
};

int main() {
    vector<int> v{2, 7, 11};
    cout << Solution().twoSum(v, 9)[0] << gcd(4, 6) << endl;
    return 0;
}
"""

GO = """\
package main

import (
\t"fmt"
)

type Solution struct{}

func abs(x int) int {
\tif x < 0 {
\t\treturn -x
\t}
\treturn x
}

// TwoSum returns the indices of the two numbers adding up to target.
func (s *Solution) TwoSum(nums []int, target int) []int {
\tseen := map[int]int{}
\tfor i, n := range nums {
\t\tif j, ok := seen[target-n]; ok {
\t\t\treturn []int{j, i}
\t\t}
\t\tseen[n] = i
\t}
\treturn nil
}

func (s Solution) MaxProfit(prices []int) int {
\tbest, low := 0, 1<<30
\tfor _, p := range prices {
\t\tlow = min(low, p)
\t\tbest = max(best, abs(p-low))
\t}
\treturn best
}

func main() {
\tfmt.Println((&Solution{}).TwoSum([]int{2, 7, 11}, 9))
}
"""

RUST = """\
use std::collections::HashMap;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

struct Solution;

impl Solution {
    /// Indices of the two numbers that add up to `target`.
    #[allow(dead_code)]
    pub fn two_sum(nums: Vec<i32>, target: i32) -> Vec<i32> {
        let mut seen = HashMap::new();
        for (i, n) in nums.iter().enumerate() {
            if let Some(&j) = seen.get(&(target - n)) {
                return vec![j as i32, i as i32];
            }
            seen.insert(*n, i);
        }
        vec![]
    }

    pub fn max_profit(prices: Vec<i32>) -> i32 {
        let (mut best, mut low) = (0, i32::MAX);
        for p in prices { low = low.min(p); best = best.max(p - low); }
        best
    }
}

fn main() {
    println!("{:?} {}", Solution::two_sum(vec![2, 7, 11], 9), gcd(4, 6));
}
"""

PROGRAMS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "javascript": (JS, [("preamble", "preamble"), ("function", "add"), ("method", "Solution.twoSum"),
                        ("method", "Solution.maxProfit"), ("function", "main"), ("epilogue", "epilogue")]),
    "typescript": (TS, [("preamble", "preamble"), ("function", "square"), ("method", "Solution.fib"),
                        ("method", "Solution.area"), ("function", "main"), ("epilogue", "epilogue")]),
    "java": (JAVA, [("preamble", "preamble"), ("method", "Solution.twoSum"),
                    ("method", "Solution.maxProfit"), ("method", "Main.main"), ("epilogue", "epilogue")]),
    "cpp": (CPP, [("preamble", "preamble"), ("function", "gcd"), ("method", "Solution.twoSum"),
                  ("method", "Solution.maxProfit"), ("function", "main")]),
    "go": (GO, [("preamble", "preamble"), ("function", "abs"), ("method", "Solution.TwoSum"),
                ("method", "Solution.MaxProfit"), ("function", "main")]),
    "rust": (RUST, [("preamble", "preamble"), ("function", "gcd"), ("method", "Solution.two_sum"),
                    ("method", "Solution.max_profit"), ("function", "main")]),
}

BROKEN: dict[str, str] = {
    "javascript": "function f( {\n  return 1;\n}\nclass A { m() { }\n",
    "typescript": "function f(x: number {\n  return x;\n}\n",
    "java": "class A {\n  void f() { int x = ; }\n",
    "cpp": "int main() {\n  return 0\n",
    "go": "package main\nfunc main( {\n}\n",
    "rust": "fn main() {\n    let x = ;\n}\nimpl A { fn f(&self) {\n",
}

COMMENTS_ONLY: dict[str, str] = {
    "javascript": "// nothing here\n/* still nothing */\n",
    "typescript": "/** doc */\n",
    "java": "// a\n/* b */\n",
    "cpp": "// a\n\n/* b */\n",
    "go": "// Package comment only.\n",
    "rust": "/// doc\n// line\n/* block */\n",
}


def _check_steps(code: str, steps: list[Step]) -> None:
    assert "".join(s.text for s in steps) == code
    byte = 0
    for prev, step in zip([None, *steps], steps, strict=False):
        assert 1 <= step.start_line <= step.end_line
        assert step.start_byte == byte < step.end_byte
        assert len(step.text.encode("utf-8", "surrogatepass")) == step.end_byte - step.start_byte
        byte = step.end_byte
        if prev is not None:
            assert prev.start_line < step.start_line
    assert byte == len(code.encode("utf-8", "surrogatepass"))


def _kinds(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.kind, s.name) for s in steps]


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_program_splits_into_functions_and_methods(language: str) -> None:
    code, expected = PROGRAMS[language]
    result = split_code(code, language)
    assert result.parsed
    assert _kinds(result.steps) == expected
    _check_steps(code, result.steps)
    assert _kinds(split_steps(code, language)) == expected


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_crlf_and_bare_cr_give_the_same_steps(language: str) -> None:
    code, expected = PROGRAMS[language]
    for newline in ("\r\n", "\r"):
        other = code.replace("\n", newline)
        steps = split_steps(other, language)
        _check_steps(other, steps)
        assert _kinds(steps) == expected
        assert [s.start_line for s in steps] == [s.start_line for s in split_steps(code, language)]


def test_leading_comments_and_attributes_join_the_function() -> None:
    steps = split_steps(JS, "javascript")
    assert steps[1].text.startswith("// Adds two numbers.\nfunction add")
    java = split_steps(JAVA, "java")
    assert java[1].text.startswith("    // Indices") and java[2].text.startswith('    @SuppressWarnings')
    rust = split_steps(RUST, "rust")
    assert rust[2].text.startswith("    /// Indices of the two numbers")
    go = split_steps(GO, "go")
    assert go[2].text.startswith("// TwoSum returns")


def test_comment_after_blank_line_or_code_stays_behind() -> None:
    code = "let x = 1; // trailing\n// detached\n\nfunction f() {}\n"
    steps = split_steps(code, "javascript")
    assert _kinds(steps) == [("preamble", "preamble"), ("function", "f")]
    assert steps[1].text == "function f() {}\n"
    code = "const y = 2; /* same line */\nfunction g() {}\n"
    assert split_steps(code, "javascript")[1].text == "function g() {}\n"


@pytest.mark.parametrize(("language", "code", "expected"), [
    ("javascript",
     "export function a() {}\nexport default function () {}\nexport const b = async () => 1;\n"
     "var c = function* () {}, d = 1;\nlet e = 3;\n"
     "export class K {\n  @dec m() {}\n  get p() { return 1; }\n}\n"
     "export default class { z() {} }\n",
     [("function", "a"), ("function", "default"), ("function", "b"), ("method", "K.m"), ("method", "K.p"),
      ("method", "default.z")]),
    ("typescript",
     "function f(a: string): void;\nfunction f(a: unknown) {}\n"
     "export abstract class A {\n  abstract m(): void;\n  @log\n  n(): void {}\n}\n"
     "interface I { x(): void }\n",
     [("preamble", "preamble"), ("function", "f"), ("method", "A.n"), ("epilogue", "epilogue")]),
    ("java",
     "interface I {\n  void a();\n  default void b() {}\n}\nenum E {\n  X, Y;\n  void m() {}\n}\n"
     "record R(int x) {\n  R {\n  }\n}\n",
     [("preamble", "preamble"), ("method", "I.b"), ("method", "E.m"), ("method", "R.R"),
      ("epilogue", "epilogue")]),
    ("cpp",
     "template <typename T>\nT mx(T a, T b) { return a < b ? b : a; }\n"
     "struct P {\n  P() {}\n  template <class U> void set(U u) {}\n  void decl();\n};\n"
     "void P::decl() {}\nint* ptr() { return nullptr; }\nnamespace ns {\nint q() { return 0; }\n}\n",
     [("function", "mx"), ("method", "P.P"), ("method", "P.set"),
      ("function", "P::decl"), ("function", "ptr"), ("function", "q"), ("epilogue", "epilogue")]),
    ("go",
     "package main\n\nfunc (l *List[T]) Push(v T) {}\n",
     [("preamble", "preamble"), ("method", "List.Push")]),
    ("rust",
     "#[derive(Debug)]\nstruct S;\ntrait T {\n    fn sig(&self);\n    fn d(&self) {}\n}\n"
     "impl<X> T for Wrap<X> {\n    fn d(&self) {}\n}\nmod m {\n    #[test]\n    fn t() {}\n}\n",
     [("preamble", "preamble"), ("method", "T.d"), ("method", "Wrap.d"), ("function", "t"),
      ("epilogue", "epilogue")]),
])
def test_language_specific_node_types(language: str, code: str, expected: list[tuple[str, str]]) -> None:
    result = split_code(code, language)
    assert result.parsed
    _check_steps(code, result.steps)
    assert _kinds(result.steps) == expected


@pytest.mark.parametrize("language", sorted(BROKEN))
def test_syntax_error_is_not_parsed_but_still_concatenates(language: str) -> None:
    code = BROKEN[language]
    result = split_code(code, language)
    assert not result.parsed
    _check_steps(code, result.steps)


@pytest.mark.parametrize("language", sorted(COMMENTS_ONLY))
def test_only_comments_is_invalid(language: str) -> None:
    with pytest.raises(InvalidInput, match="no statements"):
        split_code(COMMENTS_ONLY[language], language)


def test_unicode_surrogates_and_deep_nesting_do_not_crash() -> None:
    code = 'const s = "é\ud800";\nfunction é() { return "ß"; }\n'
    steps = split_steps(code, "javascript")
    _check_steps(code, steps)
    assert _kinds(steps) == [("preamble", "preamble"), ("function", "é")]
    deep = "function f() { return " + "(" * 20000 + "1" + ")" * 20000 + "; }\n"
    assert _kinds(split_steps(deep, "javascript")) == [("function", "f")]
    deep_rust = "fn f() " + "{" * 5000 + "}" * 5000 + "\n"
    assert _kinds(split_steps(deep_rust, "rust")) == [("function", "f")]


def test_concurrent_splits_share_cached_parsers_safely() -> None:
    jobs = [(lang, code) for lang, (code, _) in PROGRAMS.items()] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: split_steps(job[1], job[0]), jobs))
    for (lang, _), steps in zip(jobs, results, strict=True):
        assert _kinds(steps) == PROGRAMS[lang][1]


TOKENS = ["function f(){", "}", "\n", "// c", "class A {", "m(){}", "\r\n", "\r", "é", " ",
          "func g() {", "func (s *T) h() {", "fn r() {", "impl A {", "int x(){", "\t", "/*", "*/"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=30),
       language=st.sampled_from(sorted(PROGRAMS)))
def test_random_token_soup_concatenates_back(parts: list[str], language: str) -> None:
    code = "".join(parts)
    try:
        steps = split_steps(code, language)
    except InvalidInput:
        return
    _check_steps(code, steps)
