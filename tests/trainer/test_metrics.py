"""Best-of-N metrics (trainer.metrics) and its report files (trainer.report) on hand-built cases."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from service.aggregate import sigmoid
from trainer.metrics import Baseline, Estimate, EvalCandidate, EvalReport, auroc, calibration, evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cand(pid: str, cid: str, passed: bool, *logits: float, scorer: str = "s",
         difficulty: str | None = None) -> EvalCandidate:
    return EvalCandidate(pid, cid, passed, difficulty, {scorer: list(logits)})


def scored(outcomes: Mapping[str, Sequence[bool]], *, good: float = 2.0, bad: float = -2.0) -> list[EvalCandidate]:
    """One single-step candidate per outcome; passing ones get logit ``good``, failing ones ``bad``."""
    return [cand(pid, f"c{j}", ok, good if ok else bad) for pid, row in outcomes.items() for j, ok in enumerate(row)]


def random_problems(n_problems: int, n_cand: int, rng: np.random.Generator, skill: float = 1.0,
                    difficulties: Sequence[str | None] = ("easy", "medium", "hard"), prefix: str = "p"
                    ) -> list[EvalCandidate]:
    """Noisy scorers: ``s`` with signal ``skill``; step logits of 1..3 steps."""
    out = []
    for p in range(n_problems):
        rate = rng.uniform(0.0, 1.0)
        for c in range(n_cand):
            ok = bool(rng.random() < rate)
            logits = rng.normal(skill if ok else -skill, 1.0, size=int(rng.integers(1, 4))).round(1)
            out.append(EvalCandidate(f"{prefix}{p:04d}", f"c{c:02d}", ok, difficulties[p % len(difficulties)],
                                     {"s": logits.tolist(), "t": rng.normal(0.0, 1.0, size=2).round(1).tolist()}))
    return out


def run(cands: Sequence[EvalCandidate], scorers: Sequence[str] = ("s",), **kw: object) -> EvalReport:
    kw.setdefault("aggregations", ("min", "last"))
    kw.setdefault("bootstrap", 300)
    kw.setdefault("curve_repeats", 20)
    return evaluate(cands, scorers=scorers, **kw)  # type: ignore[arg-type]


MIXED = {"a": [True, False, False], "b": [False, False, True, False], "c": [False, True]}  # pass rates 1/3, 1/4, 1/2


def test_perfect_scorer_reaches_the_oracle() -> None:
    report = run(scored(MIXED | {"d": [False, False], "e": [True]}))
    for row in report.results:
        assert row.selected.value == row.selected_expected.value == report.oracle.value == pytest.approx(0.8)
        assert row.auroc == 1.0


def test_anti_correlated_scorer_fails_every_mixed_problem() -> None:
    report = run(scored(MIXED, good=-2.0, bad=2.0))
    assert [r.selected.value for r in report.results] == [0.0, 0.0]
    assert report.results[0].auroc == 0.0
    assert run(scored(MIXED | {"all": [True, True]}, good=-2.0, bad=2.0)).results[0].selected.value == 0.25


def test_random_pick_is_the_mean_candidate_pass_rate() -> None:
    report = run(scored(MIXED))
    assert report.random.value == pytest.approx((1 / 3 + 1 / 4 + 1 / 2) / 3)  # not the pooled 3/9
    assert report.best_of_n.random == pytest.approx(report.random.value)
    assert report.n_problems == 3 and report.n_candidates == 9 and (report.n_min, report.n_max) == (2, 4)


def test_ties_go_to_the_smallest_candidate_id_whatever_the_input_order() -> None:
    cands = [cand("p", "b", True, 1.0), cand("p", "a", False, 1.0), cand("p", "c", True, -1.0)]
    for order in (cands, cands[::-1]):
        row = run(order).results[0]
        assert row.selected.value == 0.0  # "a" wins the tie
        assert row.selected_expected.value == 0.5  # a uniform pick between "a" and "b"


def test_auroc_on_constructed_cases() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 4, [False, True, False, True]) == 0.5
    assert auroc([1, 4, 2, 3], [True, True, False, False]) == 0.5
    assert auroc([1, 3, 2, 4], [True, True, False, False]) == 0.25
    assert auroc([0.3, 0.4], [True, True]) is None and auroc([0.3], [False]) is None


def brute_force_auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3 + 0.1 * scores
    assert auroc(scores, labels) == pytest.approx(brute_force_auroc(scores.tolist(), labels.tolist()), abs=1e-12)


def test_pooled_auroc_in_the_report_is_over_all_candidates() -> None:
    cands = random_problems(30, 5, np.random.default_rng(0))
    row = run(cands, aggregations=("last",)).results[0]
    pooled = [1 / (1 + math.exp(-c.step_logits["s"][-1])) for c in cands]
    assert row.auroc == pytest.approx(brute_force_auroc(pooled, [c.passed for c in cands]))


def width(e: Estimate) -> float:
    return e.ci_high - e.ci_low


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_problems() -> None:
    small = run(random_problems(40, 8, np.random.default_rng(1)), bootstrap=2000)
    large = run(random_problems(640, 8, np.random.default_rng(2)), bootstrap=2000)
    for report in (small, large):
        for est in (report.random, report.oracle, *(r.selected for r in report.results)):
            assert est.ci_low <= est.value <= est.ci_high
    assert width(large.results[0].selected) < width(small.results[0].selected) / 2  # ~ 1/sqrt(16)
    assert width(large.random) < width(small.random) / 2
    again = run(random_problems(40, 8, np.random.default_rng(1)), bootstrap=2000)
    assert again == small  # seeded: the same numbers on every run


def test_gained_and_lost_against_another_scorer() -> None:
    # problem: (passed, logit of "new", logit of "old") per candidate
    table = {"gain1": [(True, 2, -1), (False, -1, 2)], "gain2": [(False, 0, 3), (True, 1, 0)],
             "lose": [(True, -1, 1), (False, 1, -1)], "both": [(True, 1, 1)], "neither": [(False, 1, 1)]}
    cands = [EvalCandidate(pid, f"c{j}", ok, None, {"new": [n], "old": [o]})
             for pid, rows in table.items() for j, (ok, n, o) in enumerate(rows)]
    report = run(cands, scorers=("new", "old"), aggregations=("last",), baselines=["old"])
    new, old = report.results
    (comp,) = new.comparisons
    assert (comp.baseline, comp.against, comp.gained, comp.lost) == ("old", "old/last", 2, 1)
    assert comp.delta.value == pytest.approx(new.selected.value - old.selected.value) == pytest.approx(1 / 5)
    assert old.comparisons == ()  # not compared with itself


def test_gained_and_lost_against_the_last_step_orm_baseline() -> None:
    # "min" picks c1 (its weak first step is the lesser evil), "last" picks c0 by its confident last step
    cands = [cand("p", "c0", True, -3.0, 3.0), cand("p", "c1", False, 1.0, 1.0),
             cand("q", "c0", False, -3.0, 3.0), cand("q", "c1", True, 1.0, 1.0)]
    by_key = {r.key: r for r in run(cands, aggregations=("min", "last"), baselines=[Baseline(aggregation="last")])
              .results}
    (comp,) = by_key["s/min"].comparisons
    assert (comp.against, comp.gained, comp.lost) == ("s/last", 1, 1)
    assert by_key["s/last"].comparisons == ()


def test_per_difficulty_rows_sum_to_the_totals() -> None:
    cands = random_problems(50, 6, np.random.default_rng(3), difficulties=("Hard", None, "easy", "medium", "medium"))
    report = run(cands)
    rows = report.by_difficulty
    assert [r.difficulty for r in rows] == ["easy", "medium", "Hard", "unknown"]
    assert sum(r.n_problems for r in rows) == report.n_problems == 50
    assert sum(r.n_candidates for r in rows) == report.n_candidates == 300
    share = {r.difficulty: r.n_problems / report.n_problems for r in rows}
    assert sum(share[r.difficulty] * r.random for r in rows) == pytest.approx(report.random.value)
    assert sum(share[r.difficulty] * r.oracle for r in rows) == pytest.approx(report.oracle.value)
    for res in report.results:
        assert sum(share[r.difficulty] * r.selected[res.key] for r in rows) == pytest.approx(res.selected.value)


def test_best_of_n_curve_of_a_perfect_scorer_rises_to_the_full_n_value() -> None:
    rng = np.random.default_rng(4)
    outcomes = {f"p{i}": (rng.random(10) < rng.uniform(0, 0.6)).tolist() for i in range(40)}
    report = run(scored(outcomes), curve_repeats=50)
    curve = report.best_of_n
    assert curve.ns == (1, 2, 4, 8, 10)
    values = curve.selected["s/min"]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values == curve.oracle  # a perfect scorer finds a passing candidate whenever the subset has one
    assert values[-1] == report.results[0].selected.value == report.oracle.value
    assert values[0] == pytest.approx(report.random.value, abs=0.05)  # N = 1 is a random pick


def test_best_of_n_curve_ends_at_the_selected_value_with_uneven_n() -> None:
    report = run(random_problems(30, 5, np.random.default_rng(5))
                 + random_problems(30, 3, np.random.default_rng(6), prefix="q")[:-1], scorers=("s", "t"))
    assert report.best_of_n.ns == (1, 2, 4, 5)
    for row in report.results:
        assert report.best_of_n.selected[row.key][-1] == row.selected.value


def test_calibration_hand_checked() -> None:
    cal = calibration([0.9, 0.2, 0.6], [True, False, False])
    assert cal.brier == pytest.approx((0.1**2 + 0.2**2 + 0.6**2) / 3)
    assert cal.ece == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert cal.count == (0, 0, 1, 0, 0, 0, 1, 0, 0, 1)
    assert cal.mean_predicted[9] == 0.9 and cal.observed[9] == 1.0 and cal.observed[0] is None
    assert calibration([0.0, 1.0], [False, True]).count == (1, 0, 0, 0, 0, 0, 0, 0, 0, 1)  # edges stay in range
    assert calibration([0.9] * 100, [True, False] * 50).ece == pytest.approx(0.4)


def test_calibration_of_a_calibrated_sample_has_near_zero_ece() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(200_000)
    cal = calibration(p, rng.random(p.size) < p)
    assert cal.ece < 0.01
    assert cal.brier == pytest.approx(1 / 6, abs=0.005)  # E[p(1-p)] for p ~ U(0, 1)
    assert sum(cal.count) == p.size


def test_candidates_without_steps_rank_last_and_count_as_p_zero() -> None:
    cands = [cand("p", "a", True), cand("p", "b", False, -8.0), cand("q", "a", False), cand("q", "b", True)]
    report = run(cands, aggregations=("min",), baselines=(), curve_repeats=50)
    row = report.results[0]
    assert report.unscored == {"s": 3}
    assert row.selected.value == 0.0  # p: the scored failing candidate beats the unscored passing one
    assert row.selected_expected.value == pytest.approx(0.25)  # q: a tie between two unscored candidates
    assert row.calibration.count[0] == 4 and row.calibration.mean_predicted[0] == pytest.approx(sigmoid(-8.0) / 4)
    assert report.best_of_n.selected["s/min"][-1] == 0.0


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        run([cand("p", "c", True, 1.0), cand("p", "c", False, 0.0)])
    with pytest.raises(ValueError, match="no finite step logits"):
        run([cand("p", "c", True, 1.0, scorer="other")])
    with pytest.raises(ValueError, match="no finite step logits"):
        run([cand("p", "c", True, float("nan"))])
    with pytest.raises(ValueError, match="conflicting"):
        run([cand("p", "a", True, 1.0, difficulty="easy"), cand("p", "b", True, 1.0, difficulty="hard")])
    with pytest.raises(ValueError, match="baseline"):
        run(scored(MIXED), baselines=["missing_scorer"])
    with pytest.raises(ValueError, match="no candidates"):
        run([])


def test_baseline_specs() -> None:
    assert Baseline.parse("last") == Baseline(aggregation="last")
    assert Baseline.parse("prm_uncorrected") == Baseline(scorer="prm_uncorrected")
    assert Baseline.parse("orm/last") == Baseline("orm", "last")
    assert Baseline.parse("orm/last").name == "orm/last" and Baseline.parse("last").resolve("s", "min") == ("s", "last")
    with pytest.raises(ValueError):
        Baseline.parse("orm/median")


def require_matplotlib() -> None:
    """matplotlib belongs to the trainer extra: skip where it is missing, except in CI."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("matplotlib is not installed")
        pytest.skip("matplotlib is not installed")


def test_write_report_writes_json_markdown_and_pngs(tmp_path: Path) -> None:
    require_matplotlib()
    from trainer.report import FILES, format_comparison, format_estimate, write_report

    assert format_estimate(Estimate(0.5, 0.25, 0.755)) == "50.0 [25.0, 75.5]"
    cands = random_problems(25, 4, np.random.default_rng(8))
    report = run(cands, scorers=("s", "t"), aggregations=("min", "mean", "last"), baselines=["last", "t"],
                 metadata={"policy": "qwen2.5-coder-7b", "split": "lcb-v6"})
    paths = write_report(report, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)
    for name in ("calibration.png", "best_of_n.png"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
    data = json.loads(paths["eval.json"].read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    md = paths["eval.md"].read_text()
    assert "qwen2.5-coder-7b" in md and "lcb-v6" in md and "Problems: 25; candidates: 100 (N = 4 per problem)" in md
    assert f"| random pick | — | {format_estimate(Estimate(**data['random']))} |" in md
    for row in data["results"]:
        line = next(line for line in md.splitlines() if line.startswith(f"| {row['scorer']} | {row['aggregation']} |"))
        assert format_estimate(Estimate(**row["selected"])) in line
        assert f"{row['auroc']:.3f}" in line
    for row in report.results:
        for comp in row.comparisons:
            assert format_comparison(comp) in md
    assert "| s/min | " in md and "| all |" in md and "N = 4" in md
