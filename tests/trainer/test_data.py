"""Problem loading (every shared file), the deterministic train/meta/dev split, and the leak guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_data
from trainer.data import (
    DataLeakError,
    Split,
    assert_no_leak,
    check_training_source,
    load_problems,
    select_problems,
    split_key,
    split_problems,
)
from trainer.records import Problem

# file -> distinct problems (apps_selected150.jsonl has 150 rows, 22 of them exact repeats)
SHARED = {"leetcodedataset_train.jsonl": 1880, "leetcodedataset_test_shared.jsonl": 254, "humaneval.jsonl": 164,
          "humanevalplus.jsonl": 164, "mbpp.jsonl": 974, "mbpp_sanitized.jsonl": 427, "mbppplus.jsonl": 399,
          "apps_selected150.jsonl": 128}


def problem(pid: str, question_id: int | None = None, difficulty: str | None = None) -> Problem:
    metadata = {} if question_id is None else {"question_id": question_id}
    return Problem(id=pid, source="test", prompt="p", test_type="functional", difficulty=difficulty,
                   metadata=metadata)


def leetcode_like(n: int) -> list[Problem]:
    return [problem(f"leetcode/{i}-q", question_id=i, difficulty=("easy", "medium", "hard")[i % 3]) for i in range(n)]


def ids(problems: list[Problem]) -> list[str]:
    return [p.id for p in problems]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_loads_every_shared_file(name: str) -> None:
    problems = load_problems(shared_data(name))
    assert len(problems) == SHARED[name] == len(set(ids(problems)))
    for p in problems:
        for test in p.all_tests:
            assert (test.type == "assert" and test.code) or (test.type == "io" and test.input is not None
                                                             and test.output is not None), p.id
    assert any(p.all_tests for p in problems)


def test_load_reports_the_bad_line(tmp_path: Path) -> None:
    good = problem("a").model_dump_json()
    path = tmp_path / "p.jsonl"
    path.write_text(f"{good}\n\n{good}\n" + '{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:4: not a valid problem"):
        load_problems(path)
    path.write_text(f"{good}\n{good}\n")
    assert ids(load_problems(path)) == ["a"]  # an exact repeat is dropped
    path.write_text(f"{good}\n{problem('a', difficulty='hard').model_dump_json()}\n")
    with pytest.raises(ValueError, match=r"p\.jsonl:2: problem id 'a' is reused by a different problem"):
        load_problems(path)


def assert_partition(split: Split, problems: list[Problem]) -> None:
    parts = [set(ids(split.train)), set(ids(split.meta)), set(ids(split.dev))]
    assert sum(map(len, parts)) == len(problems) and set.union(*parts) == set(ids(problems))


def test_split_of_the_training_set_is_pinned() -> None:
    """The real split: deterministic, disjoint, ~10 % dev. Changing these counts invalidates earlier results."""
    problems = load_problems(shared_data("leetcodedataset_train.jsonl"))
    split = split_problems(problems)
    assert_partition(split, problems)
    assert (len(split.train), len(split.meta), len(split.dev)) == (1505, 189, 186)
    assert ids(split_problems(list(reversed(problems))).dev) == list(reversed(ids(split.dev)))
    assert {p.id for p in split.dev} >= {"leetcode/11-container-with-most-water", "leetcode/45-jump-game-ii"}


def test_leetcode_evaluation_set_shares_no_question_with_training() -> None:
    train = load_problems(shared_data("leetcodedataset_train.jsonl"))
    shared_eval = load_problems(shared_data("leetcodedataset_test_shared.jsonl"))
    assert_no_leak(map(split_key, train), map(split_key, shared_eval))
    assert_no_leak(ids(train), ids(shared_eval))


def test_split_is_deterministic_disjoint_and_near_its_fractions() -> None:
    problems = leetcode_like(3000)
    split = split_problems(problems, dev_fraction=0.1, meta_fraction=0.15)
    assert split == split_problems(problems, dev_fraction=0.1, meta_fraction=0.15)
    assert_partition(split, problems)
    assert 0.07 <= len(split.dev) / len(problems) <= 0.13
    assert 0.12 <= len(split.meta) / len(problems) <= 0.18
    # each problem's part depends on its id alone: a subset splits the same way, and meta never moves dev
    subset = problems[::7]
    assert ids(split_problems(subset, 0.1, 0.15).dev) == [p.id for p in split.dev if p.id in set(ids(subset))]
    assert split_problems(problems, 0.1, 0.0).dev == split.dev
    assert split_problems(problems, 0.1, 0.0).meta == []


def test_split_hashes_the_question_id_not_the_slug() -> None:
    a, b = problem("leetcode/7-old-slug", question_id=7), problem("leetcode/7-new-slug", question_id=7)
    assert split_key(a) == split_key(b) == "7"
    assert split_key(problem("HumanEval/0")) == "HumanEval/0"
    for fraction in (0.3, 0.5, 0.7):
        split = split_problems([a, b], dev_fraction=fraction, meta_fraction=0)
        assert len(split.dev) in (0, 2)


@pytest.mark.parametrize(("dev", "meta"), [(-0.1, 0.1), (1.1, 0.0), (0.6, 0.5)])
def test_split_rejects_bad_fractions(dev: float, meta: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        split_problems(leetcode_like(10), dev, meta)


def test_assert_no_leak() -> None:
    assert_no_leak(["a", "b"], ["c"])
    with pytest.raises(DataLeakError, match=r"1 problem.*also in the evaluation set: b"):
        assert_no_leak(["a", "b"], ["b", "c"])
    with pytest.raises(DataLeakError, match=r"12 problem.* \.\.\.$"):
        assert_no_leak(range(20), range(8, 30))


def test_check_training_source(tmp_path: Path) -> None:
    train, humaneval = tmp_path / "leetcodedataset_train.jsonl", tmp_path / "humaneval.jsonl"
    train.touch()
    humaneval.touch()
    assert check_training_source(train) == train
    with pytest.raises(DataLeakError, match=r"humaneval\.jsonl may not be used for training"):
        check_training_source(humaneval)
    assert check_training_source(humaneval, allow_any=True) == humaneval
    disguised = tmp_path / "renamed" / "leetcodedataset_train.jsonl"
    disguised.parent.mkdir()
    disguised.symlink_to(humaneval)
    with pytest.raises(DataLeakError):
        check_training_source(disguised)


def test_check_training_source_refuses_shared_evaluation_sets() -> None:
    with pytest.raises(DataLeakError):
        check_training_source(shared_data("humaneval.jsonl"))
    check_training_source(shared_data("leetcodedataset_train.jsonl"))


def test_select_problems() -> None:
    problems = leetcode_like(9)
    assert ids(select_problems(problems, limit=2)) == ["leetcode/0-q", "leetcode/1-q"]
    assert ids(select_problems(problems, difficulties=["HARD"])) == ["leetcode/2-q", "leetcode/5-q", "leetcode/8-q"]
    assert ids(select_problems(problems, ids={"leetcode/8-q", "leetcode/3-q"}, difficulties=["easy"])) == \
        ["leetcode/3-q"]
    assert select_problems(problems, limit=0) == []
    assert len(select_problems(problems)) == 9
    with pytest.raises(KeyError, match="leetcode/99-q"):
        select_problems(problems, ids=["leetcode/99-q"])
    with pytest.raises(ValueError, match="limit"):
        select_problems(problems, limit=-1)
