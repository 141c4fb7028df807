"""The ``evaluate`` stage: score the dev part's candidates with each checkpoint of the run and the baselines,
then best-of-N metrics (``trainer.metrics``) and the verifier reports (``trainer.verify``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from service.aggregate import AGGREGATIONS
from service.errors import InputTooLong
from service.model import PRMModel
from trainer.config import EvaluateConfig
from trainer.manifest import stage
from trainer.metrics import EvalCandidate, evaluate
from trainer.records import Candidate
from trainer.report import write_report
from trainer.rundir import BASELINE_SCORERS, SCORERS, executed_candidates, run_problems
from trainer.verify import per_problem, score_cache

logger = logging.getLogger(__name__)


def run(rundir: Path, config: EvaluateConfig, *, policy_name: str) -> dict[str, Any]:
    """Best-of-N on the dev part with every checkpoint the run has (and ``config.checkpoints``): the LeetCode
    report (RUN/evaluate/eval.*) and the verifier report with baselines, pools within one model
    (RUN/evaluate/verify.*)."""
    from trainer.verify import baseline_scores, loglik_scores, prm_scores, verify_report, write_verify

    with stage(rundir / "evaluate", "evaluate", config) as st:
        cands = executed_candidates(rundir, "dev")
        problems = {p.id: p for p in run_problems(rundir, "dev")}
        scorers = {name: rundir / rel for name, rel in (SCORERS | BASELINE_SCORERS).items()
                   if (rundir / rel / "prm.json").is_file()}
        scorers |= {Path(c).name: Path(c) for c in config.checkpoints}
        logits = {name: _score_all(PRMModel.load(path, device="cpu", dtype=config.dtype), problems, cands,
                                   desc=f"evaluate {name}", cache=rundir / "evaluate" / "scores", name=name)
                  for name, path in scorers.items()}
        own = [i for i, c in enumerate(cands) if c.provenance != "pool"]
        report: dict[str, Any] = {}
        if own and scorers:
            report = _leetcode_report(rundir, config, [cands[i] for i in own], problems,
                                      {n: [v[i] for i in own] for n, v in logits.items()}, policy_name)
        scores = baseline_scores(cands)
        if config.loglik_model:
            scores["loglik"] = loglik_scores(config.loglik_model, problems, cands, dtype=config.dtype,
                                             cache=rundir / "evaluate" / "scores")
        for name, values in logits.items():
            scores |= prm_scores(name, values, cands)
        reports = verify_report(cands, scores, reference="loglik" if config.loglik_model else "longest",
                                bootstrap=config.bootstrap, seed=config.seed)
        write_verify(rundir / "evaluate", reports, {"scorers": {n: str(p) for n, p in scorers.items()}})
        st.count("candidates", len(cands))
        return {**report, "verify": [r.to_dict() for r in reports]}


def _leetcode_report(run: Path, config: EvaluateConfig, cands: list[Candidate], problems: dict[str, Any],
                     logits: dict[str, list[list[float]]], policy_name: str) -> dict[str, Any]:
    evals = [EvalCandidate(problem_id=c.problem_id, candidate_id=c.candidate_id,
                           passed=bool(c.exec and c.exec.passed), difficulty=problems[c.problem_id].difficulty,
                           step_logits={n: logits[n][i] for n in logits}, step_context=[s.context for s in c.steps])
             for i, c in enumerate(cands)]
    aggregations = config.aggregations or AGGREGATIONS
    baselines = (["last"] if "last" in aggregations else []) + \
        (["prm_uncorrected"] if "prm_uncorrected" in logits else [])
    report = evaluate(evals, scorers=list(logits), aggregations=aggregations, baselines=baselines,
                      bootstrap=config.bootstrap, seed=config.seed,
                      metadata={"policy": policy_name, "split": "dev", "run": str(run)})
    write_report(report, run / "evaluate")
    return report.to_dict()


def _score_all(model: PRMModel, problems: dict[str, Any], cands: list[Candidate], *,
               desc: str = "score", cache: Path | None = None, name: str = "prm") -> list[list[float]]:
    """Step logits of every candidate; empty (ranked last, as the service would not score it) when it
    has no steps or its code alone does not fit the checkpoint's ``max_tokens``. The candidates of one
    problem go through one ``forward`` call, so they share the problem prefix as in the service. With
    ``cache`` (a folder), each problem's logits are stored as they come (``score_cache``: per scorer, model
    revision and precision), so a killed evaluation resumes."""
    out: list[list[float]] = [[] for _ in cands]
    by_problem: dict[str, list[tuple[int, Any]]] = {}
    too_long = 0
    for i, c in enumerate(cands):
        if not c.steps:
            continue
        try:
            enc = model.encode(problems[c.problem_id].prompt, [s.text for s in c.steps])
        except InputTooLong:
            too_long += 1
            continue
        by_problem.setdefault(c.problem_id, []).append((i, enc))
    dtype = str(next(model.network.parameters()).dtype).removeprefix("torch.")

    def compute(pid: str) -> list[list[float]]:
        return model.forward([enc for _, enc in by_problem[pid]])

    values = per_problem({pid: [cands[i].candidate_id for i, _ in members] for pid, members in by_problem.items()},
                         compute, score_cache(cache, f"{name}-{model.revision}-{dtype}") if cache else None, desc)
    for pid, members in by_problem.items():  # one forward call (and one cache record) per problem
        for (i, _), logits in zip(members, values[pid], strict=True):
            out[i] = logits
    if too_long:
        logger.warning("%d of %d candidates do not fit %d tokens: unscored, ranked last", too_long, len(cands),
                       model.max_tokens)
    return out
