"""Writes an ``EvalReport`` as eval.json, eval.md (model-card tables) and two PNG plots (matplotlib, Agg canvas).

Every number in the Markdown comes from the report; uses matplotlib's object API only (no pyplot global state).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainer.metrics import Comparison, Estimate, EvalReport, ScorerResult

logger = logging.getLogger(__name__)

FILES = ("eval.json", "eval.md", "calibration.png", "best_of_n.png")
NO_POLICY = "(not recorded)"


def format_rate(value: float) -> str:
    """A pass rate as a percentage with one decimal."""
    return f"{100.0 * value:.1f}"


def format_estimate(est: Estimate) -> str:
    return f"{format_rate(est.value)} [{format_rate(est.ci_low)}, {format_rate(est.ci_high)}]"


def format_comparison(c: Comparison) -> str:
    delta = c.delta
    return (f"+{c.gained} / -{c.lost} (Δ {100.0 * delta.value:+.1f} "
            f"[{100.0 * delta.ci_low:+.1f}, {100.0 * delta.ci_high:+.1f}])")


def _optional(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _n_label(report: EvalReport) -> str:
    if report.n_min == report.n_max:
        return str(report.n_max)
    return f"{report.n_min}–{report.n_max}"


def _header(report: EvalReport) -> list[str]:
    policy = report.metadata.get("policy", NO_POLICY)
    lines = [f"# Best-of-N evaluation: {policy}", "",
             f"- Policy: `{policy}`",
             f"- Problems: {report.n_problems}; candidates: {report.n_candidates} "
             f"(N = {_n_label(report)} per problem)",
             f"- 95 % intervals: percentile bootstrap over problems, {report.bootstrap} resamples, seed {report.seed}"]
    if unscored := {k: n for k, n in report.unscored.items() if n}:
        lines.append("- Candidates without steps (ranked last, P = 0): "
                     + ", ".join(f"{k}: {n}" for k, n in unscored.items()))
    lines += [f"- {key}: `{value}`" for key, value in sorted(report.metadata.items()) if key != "policy"]
    return [*lines, ""]


def _main_table(report: EvalReport) -> list[str]:
    baselines = list(dict.fromkeys(c.baseline for r in report.results for c in r.comparisons))
    header = ["scorer", "aggregation", "selected pass@1 [95 % CI]", "ties averaged", "AUROC", "Brier", "ECE",
              *(f"vs {b}: gained / lost (Δ [95 % CI])" for b in baselines)]
    blank = ["—"] * (len(header) - 3)
    rows: list[list[object]] = [["random pick", "—", format_estimate(report.random), *blank],
                                [f"oracle pass@{_n_label(report)}", "—", format_estimate(report.oracle), *blank]]
    for r in report.results:
        by_name = {c.baseline: format_comparison(c) for c in r.comparisons}
        rows.append([r.scorer, r.aggregation, format_estimate(r.selected), format_rate(r.selected_expected.value),
                     _optional(r.auroc), f"{r.calibration.brier:.3f}", f"{r.calibration.ece:.3f}",
                     *(by_name.get(b, "—") for b in baselines)])
    intro = (f"## Selected pass@1 at N = {_n_label(report)}\n\nPass rates in %. *Selected*: the top-scored candidate "
             "of each problem, ties broken by the smallest candidate id; *ties averaged*: the expected pass rate of "
             "a uniform pick among tied top scores. AUROC, Brier and ECE pool all candidates' aggregate scores. "
             "Gained / lost count problems solved by the row and not by the baseline, and the reverse; Δ is the "
             "paired difference in points.")
    return [intro, "", *_table(header, rows), ""]


def _difficulty_table(report: EvalReport) -> list[str]:
    groups = report.by_difficulty
    header = ["", *(d.difficulty for d in groups), "all"]
    rows: list[list[object]] = [
        ["problems", *(d.n_problems for d in groups), report.n_problems],
        ["candidates", *(d.n_candidates for d in groups), report.n_candidates],
        ["random pick", *(format_rate(d.random) for d in groups), format_rate(report.random.value)],
        ["oracle", *(format_rate(d.oracle) for d in groups), format_rate(report.oracle.value)]]
    rows += [[r.key, *(format_rate(d.selected[r.key]) for d in groups), format_rate(r.selected.value)]
             for r in report.results]
    return ["## By difficulty", "", "Pass rates in %; one row per scorer/aggregation (selected pass@1).", "",
            *_table(header, rows), ""]


def _curve_table(report: EvalReport) -> list[str]:
    curve = report.best_of_n
    header = ["", *(f"N = {n}" for n in curve.ns)]
    rows: list[list[object]] = [["random pick", *(format_rate(curve.random) for _ in curve.ns)],
                                ["oracle", *(format_rate(v) for v in curve.oracle)]]
    rows += [[key, *(format_rate(v) for v in values)] for key, values in curve.selected.items()]
    intro = (f"## Best-of-N curve\n\nSelected pass@1 in % on random subsets of N candidates per problem "
             f"(all of them where a problem has fewer), mean over {curve.repeats} subsets.")
    return [intro, "", *_table(header, rows), "", "![best-of-N](best_of_n.png)", "",
            "![calibration](calibration.png)", ""]


def render_markdown(report: EvalReport) -> str:
    return "\n".join(_header(report) + _main_table(report) + _difficulty_table(report) + _curve_table(report))


def _scorers(results: Sequence[ScorerResult]) -> list[str]:
    return list(dict.fromkeys(r.scorer for r in results))


def plot_calibration(report: EvalReport, path: Path) -> None:
    scorers = _scorers(report.results)
    fig = Figure(figsize=(5.0 * len(scorers), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, scorer in zip(fig.subplots(1, len(scorers), squeeze=False)[0], scorers, strict=True):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        for r in (r for r in report.results if r.scorer == scorer):
            cal = r.calibration
            points = [(p, o) for p, o in zip(cal.mean_predicted, cal.observed, strict=True) if p is not None]
            ax.plot([p for p, _ in points], [o for _, o in points], marker="o",
                    label=f"{r.aggregation} (ECE {cal.ece:.3f}, Brier {cal.brier:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(pass) in bin", ylabel="observed pass rate",
               title=scorer)
        ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(f"Calibration of candidate scores — {report.metadata.get('policy', NO_POLICY)}, "
                 f"{report.n_problems} problems")
    fig.savefig(path, dpi=120)


def plot_best_of_n(report: EvalReport, path: Path) -> None:
    curve = report.best_of_n
    scorers = _scorers(report.results)
    styles = ["-", "--", ":", "-."]
    aggregations = list(dict.fromkeys(r.aggregation for r in report.results))
    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in report.results:
        ax.plot(curve.ns, curve.selected[r.key], marker="o", label=r.key, color=f"C{aggregations.index(r.aggregation)}",
                linestyle=styles[scorers.index(r.scorer) % len(styles)])
    ax.plot(curve.ns, curve.oracle, marker="s", color="black", linestyle="--", label="oracle pass@N")
    ax.axhline(curve.random, color="grey", linestyle=":", label="random pick")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve.ns, [str(n) for n in curve.ns])
    ax.set(xlabel="N (candidates per problem)", ylabel="selected pass@1", ylim=(0, 1.02),
           title=f"Best-of-N — {report.metadata.get('policy', NO_POLICY)}, {report.n_problems} problems, "
                 f"mean over {curve.repeats} random subsets")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=120)


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """Write ``FILES`` into ``out_dir`` (created if needed); returns file name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if "policy" not in report.metadata:
        logger.warning("evaluation report has no policy name in its metadata (DESIGN §9 asks for one)")
    paths = {name: out_dir / name for name in FILES}
    paths["eval.json"].write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    paths["eval.md"].write_text(render_markdown(report))
    plot_calibration(report, paths["calibration.png"])
    plot_best_of_n(report, paths["best_of_n.png"])
    logger.info("wrote evaluation report to %s", out_dir)
    return paths
