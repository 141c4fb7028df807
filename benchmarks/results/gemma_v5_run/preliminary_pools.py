"""Preliminary verifier numbers from a run's partial evaluate score cache: the dev pool problems whose PRM
scores are all stored, ranked by ``trainer.verify.verify_report`` (200 bootstrap resamples), without the
log-likelihood row (pass ``--loglik`` to add it on the problems it has scored).

Usage: .venv/bin/python -m benchmarks.results.gemma_v5_run.preliminary_pools runs/gemma-v5 [--loglik]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.ranking import report_markdown
from trainer.rundir import executed_candidates
from trainer.verify import DESCRIPTIONS, baseline_scores, prm_scores, verify_report


def main(run: Path, with_loglik: bool) -> None:
    cache: dict[str, dict[tuple[str, str], list[float]]] = {}
    for f in (run / "evaluate" / "scores").glob("*.jsonl"):
        for line in f.open():
            r = json.loads(line)
            cache.setdefault(f.stem, {}).update({(r["problem_id"], c): v for c, v in r["scores"].items()})
    cands = [c for c in executed_candidates(run, "dev") if c.provenance == "pool"]
    prm = next(k for k in cache if k.startswith("prm_fit"))
    loglik = next((k for k in cache if k.startswith("loglik")), None) if with_loglik else None
    pids = {c.problem_id for c in cands if (c.problem_id, c.candidate_id) in cache[prm]}
    keep = [c for c in cands if c.problem_id in pids and (loglik is None or (c.problem_id, c.candidate_id)
                                                          in cache[loglik])]
    print(len(pids), "pool problems scored;", len(keep), "candidates")
    scores = baseline_scores(keep)
    scores |= prm_scores("prm_fit", [cache[prm].get((c.problem_id, c.candidate_id), []) for c in keep], keep)
    if loglik:
        scores["loglik"] = [cache[loglik][(c.problem_id, c.candidate_id)][0] for c in keep]
    reports = verify_report(keep, scores, reference="loglik" if loglik else "longest", bootstrap=200, seed=0)
    print(report_markdown(reports, DESCRIPTIONS))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--loglik" in sys.argv[2:])
