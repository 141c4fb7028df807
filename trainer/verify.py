"""Stage ``evaluate``'s verifier report (issue 12): every PRM of the run, side by side with the baselines, on
the dev part's real candidates (pools: mixed models and within one model) and on the LeetCode dev candidates.

Rows: random pick, oracle, longest and shortest program, the base model's mean token log-likelihood (no
training), and each PRM at each aggregation — with context steps left out of the aggregate (the service's rule)
and, for comparison, with them in. Writes ``RUN/evaluate/verify.{json,md}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.aggregate import AGGREGATIONS, aggregate
from trainer.manifest import progress
from trainer.ranking import Ranked, RankingReport, rank_report, report_markdown
from trainer.records import Candidate, Problem, ProblemScores
from trainer.store import JsonlStore, atomic_write_text

if TYPE_CHECKING:
    from service.model import DType

logger = logging.getLogger(__name__)

BASELINES = ("random", "oracle", "longest", "shortest")
DESCRIPTIONS = {"random": "constant score: ties averaged", "oracle": "the test outcome itself",
                "longest": "most characters", "shortest": "fewest characters",
                "loglik": "base model's mean token log-likelihood, untrained",
                "orm/last": "outcome-only model on the same data: its score after the last step"}
UNSCORED = -1.0  # a candidate the PRM cannot score ranks below every probability (as in the service)


def prm_scores(name: str, step_logits: Sequence[Sequence[float]], cands: Sequence[Candidate]
               ) -> dict[str, list[float]]:
    """Scorer rows of one PRM: each aggregation (context steps out), and ``min`` with context steps in."""
    rows: dict[str, list[float]] = {f"{name}/{a}": [] for a in AGGREGATIONS}
    rows[f"{name}/min+context"] = []
    for logits, c in zip(step_logits, cands, strict=True):
        agg = aggregate(logits, [s.context for s in c.steps]) if logits else None
        for a in AGGREGATIONS:
            rows[f"{name}/{a}"].append(agg[a] if agg else UNSCORED)
        rows[f"{name}/min+context"].append(aggregate(logits)["min"] if logits else UNSCORED)
    return rows


def baseline_scores(cands: Sequence[Candidate]) -> dict[str, list[float]]:
    return {"random": [0.0] * len(cands), "oracle": [float(bool(c.exec and c.exec.passed)) for c in cands],
            "longest": [float(len(c.code)) for c in cands], "shortest": [-float(len(c.code)) for c in cands]}


def score_cache(folder: Path, name: str) -> JsonlStore[ProblemScores]:
    """The resumable store of one scorer's values, one record per problem (``folder/name.jsonl``)."""
    return JsonlStore(folder / f"{name}.jsonl", ProblemScores, key=lambda r: r.problem_id)


def per_problem(groups: Mapping[str, Sequence[str]], compute: Callable[[str], list[list[float]]],
                store: JsonlStore[ProblemScores] | None, desc: str) -> dict[str, list[list[float]]]:
    """``compute(problem_id)`` -> one value list per candidate id of ``groups[problem_id]``, in that order, for
    every problem; read from ``store`` where it holds all of a problem's candidates, else computed and appended
    (so a killed evaluation resumes where it stopped)."""
    done = {r.problem_id: r.scores for r in store.read()} if store else {}
    out: dict[str, list[list[float]]] = {}
    for pid, ids in progress(groups.items(), total=len(groups), desc=desc):
        if pid in done and all(c in done[pid] for c in ids):
            out[pid] = [done[pid][c] for c in ids]
            continue
        out[pid] = compute(pid)
        if store:
            store.append([ProblemScores(problem_id=pid, scores=dict(zip(ids, out[pid], strict=True)))])
    return out


def one_value_each(cands: Sequence[Candidate], compute: Callable[[str, list[Candidate]], list[float]],
                   store: JsonlStore[ProblemScores] | None, desc: str) -> list[float]:
    """One value per candidate, computed a problem at a time (``compute(problem_id, its candidates)``, in
    ``cands`` order) through ``per_problem`` (so cached and resumable), returned in ``cands`` order."""
    by_problem: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        by_problem.setdefault(c.problem_id, []).append(i)

    def values_of(pid: str) -> list[list[float]]:
        return [[v] for v in compute(pid, [cands[i] for i in by_problem[pid]])]

    values = per_problem({pid: [cands[i].candidate_id for i in idx] for pid, idx in by_problem.items()},
                         values_of, store, desc)
    out = [0.0] * len(cands)
    for pid, idx in by_problem.items():
        for i, (value,) in zip(idx, values[pid], strict=True):
            out[i] = value
    return out


def loglik_scores(source: str, problems: Mapping[str, Problem], cands: Sequence[Candidate], *,
                  dtype: DType = "auto", cache: Path | None = None) -> list[float]:
    """The base model's mean token log-likelihood of each candidate (``source``: ``smollm2`` or a path), in
    ``dtype`` (auto: what the service would pick on this machine); stored per problem in ``cache`` (a
    folder) as it goes, so a killed evaluation resumes."""
    import torch

    from service.checkpoints.backbone import base_source, load_causal_lm
    from service.model import pick_dtype
    from trainer.loglik import mean_loglik

    torch_dtype = pick_dtype(dtype, torch.device("cpu"))
    model, tokenizer = load_causal_lm(base_source(source), dtype=torch_dtype)
    tag = f"loglik-{Path(source).name}-{str(torch_dtype).removeprefix('torch.')}"
    def compute(pid: str, group: list[Candidate]) -> list[float]:
        return mean_loglik(model, tokenizer, problems[pid].prompt, [c.code for c in group])

    return one_value_each(cands, compute, score_cache(cache, tag) if cache else None, desc="evaluate loglik")


def sections(cands: Sequence[Candidate]) -> dict[str, tuple[list[int], bool]]:
    """Report name -> (candidate indices, group within one model)."""
    pools = [i for i, c in enumerate(cands) if c.provenance == "pool"]
    own = [i for i, c in enumerate(cands) if c.provenance != "pool"]
    out: dict[str, tuple[list[int], bool]] = {}
    if pools:
        out["pools, within one model"] = (pools, True)
        for source in sorted({cands[i].problem_id.split("/")[0] for i in pools}):
            idx = [i for i in pools if cands[i].problem_id.split("/")[0] == source]
            out[f"{source} pool, within one model"] = (idx, True)
            out[f"{source} pool, models mixed"] = (idx, False)
    if own:
        out["LeetCode dev (policy samples, references, mutants)"] = (own, False)
    return out


def verify_report(cands: Sequence[Candidate], scores: Mapping[str, Sequence[float]], *, reference: str,
                  bootstrap: int, seed: int) -> list[RankingReport]:
    reports = []
    for name, (idx, within_model) in sections(cands).items():
        items = [Ranked(group=f"{cands[i].problem_id}|{cands[i].model}" if within_model else cands[i].problem_id,
                        candidate_id=cands[i].candidate_id, passed=bool(cands[i].exec and cands[i].exec.passed),
                        scores={s: v[i] for s, v in scores.items()}) for i in idx]
        reports.append(rank_report(items, list(scores), name=name, reference=reference, bootstrap=bootstrap,
                                   seed=seed))
    return reports


def write_verify(out: Path, reports: Sequence[RankingReport], extra: Mapping[str, Any]) -> None:
    atomic_write_text(out / "verify.json", json.dumps({"reports": [r.to_dict() for r in reports], **extra},
                                                      indent=1))
    intro = ("# Verifier report\n\nDoes the score pick a passing candidate? Every row ranks the same candidates; "
             "`+context` keeps context steps (module-level code without logic of its own) in the aggregate; the "
             "service leaves them out.\n\n")
    atomic_write_text(out / "verify.md", intro + report_markdown(reports, DESCRIPTIONS))


def winner(verify: Mapping[str, Any], candidates: Sequence[str]) -> tuple[str, str, str]:
    """(scorer, aggregation, why) of the PRM row with the most random→oracle gap closed in the first report
    (real pools within one model when the run has them), mean within-group AUROC breaking ties. Only rows
    ``{scorer}/{aggregation}`` of the given ``candidates`` scorers compete (context-in rows do not)."""
    report = verify["reports"][0]
    best: tuple[float, float, str] | None = None
    for row in report["rows"]:
        scorer, _, agg = row["scorer"].partition("/")
        if scorer not in candidates or agg not in AGGREGATIONS:
            continue
        key = (row["gap_closed"]["value"] or float("-inf"), row["within_auroc"]["value"] or 0.0, row["scorer"])
        best = key if best is None or key[:2] > best[:2] else best
    if best is None:
        raise ValueError(f"the evaluation has no row of {list(candidates)}: run evaluate first")
    scorer, _, agg = best[2].partition("/")
    return scorer, agg, (f"best gap closed on dev ({report['name']}): {100 * best[0]:.1f} %, within-group AUROC "
                         f"{best[1]:.3f}")
