"""Issue 12's acceptance measurement: the **served** score — a live ``python -m service`` on the checkpoint,
``POST /v1/score``, the checkpoint's default aggregation — of every dev candidate of a training run, ranked
side by side with the baselines (random, oracle, longest, shortest, the base model's log-likelihood from the
run's own evaluation cache), within one model and with models mixed, with bootstrap intervals.

```sh
.venv/bin/python -m benchmarks.served_verify --run runs/real-v2 --checkpoint DIR --out benchmarks/results/NAME
```

One batch request per problem (its candidates together, as a reranking client would send them). A
candidate the service refuses (4xx: e.g. its code alone does not fit ``max_tokens``) ranks below every
score, as in ``trainer.verify``, and is counted. Scores are stored per problem in
``OUT/served_scores-REVISION.jsonl`` (the checkpoint's revision) as they come, so a killed run resumes;
``OUT/served_verify.{json,md}`` hold the report. By default only the real pools' candidates (the acceptance
set); ``--all`` adds the run's LeetCode dev candidates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import machine_info, now_iso
from tests.live import live_server_process
from trainer.ranking import report_markdown
from trainer.records import Candidate, Problem
from trainer.rundir import executed_candidates, run_problems
from trainer.verify import DESCRIPTIONS, UNSCORED, baseline_scores, one_value_each, score_cache, verify_report


def served_scores(url: str, problems: dict[str, Problem], cands: Sequence[Candidate], store: Path,
                  ) -> tuple[list[float], str, int]:
    """(score per candidate, the aggregation the service used, how many it refused)."""
    used: set[str] = set()
    refused = 0

    def one(client: httpx.Client, items: list[dict[str, str]]) -> list[dict[str, Any] | None]:
        r = client.post(f"{url}/v1/score", json={"items": items})
        if r.status_code == 200:
            return r.json()["items"]
        if r.status_code >= 500 or len(items) == 1:
            if r.status_code >= 500:
                raise RuntimeError(f"the service failed: {r.status_code} {r.text[:300]}")
            return [None]
        return [x for item in items for x in one(client, [item])]  # find the candidate it refuses

    with httpx.Client(timeout=600) as client:
        def compute(pid: str, group: list[Candidate]) -> list[float]:
            nonlocal refused
            out = one(client, [{"problem": problems[pid].prompt, "code": c.code} for c in group])
            refused += sum(r is None for r in out)
            used.update(r["aggregation"] for r in out if r is not None)
            return [r["score"] if r is not None else UNSCORED for r in out]

        scores = one_value_each(cands, compute, score_cache(store.parent, store.stem), desc="served score")
    return scores, ",".join(sorted(used)) or "(all from the cache)", refused


def loglik_from_run(run: Path, cands: Sequence[Candidate]) -> list[float] | None:
    """The base model's log-likelihood of each candidate from the run's evaluation cache (None if absent)."""
    files = sorted((run / "evaluate" / "scores").glob("loglik-*.jsonl"))
    if not files:
        return None
    done = {r.problem_id: r.scores for r in score_cache(files[0].parent, files[0].stem).read()}
    try:
        return [done[c.problem_id][c.candidate_id][0] for c in cands]
    except KeyError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run directory (its dev part)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the scores and the report")
    parser.add_argument("--all", action="store_true", help="also the run's own LeetCode dev candidates")
    parser.add_argument("--dtype", default="float32", help="the server's DREAMPRM_DTYPE (default float32)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N problems (a quick check)")
    args = parser.parse_args(argv)

    cands = [c for c in executed_candidates(args.run, "dev") if args.all or c.provenance == "pool"]
    if args.limit:
        keep = set(sorted({c.problem_id for c in cands})[: args.limit])
        cands = [c for c in cands if c.problem_id in keep]
    problems = {p.id: p for p in run_problems(args.run, "dev")}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="served-verify-") as tmp:
        env = {"DREAMPRM_DTYPE": args.dtype, "DREAMPRM_THREADS": "2", "DREAMPRM_CACHE_SIZE": "0",
               "DREAMPRM_REDIS_URL": "", "DREAMPRM_LOG_LEVEL": "WARNING", "DREAMPRM_MAX_QUEUE": "4096"}
        with live_server_process(args.checkpoint, Path(tmp) / "server.log", ready_timeout_s=600, **env) as (url, _):
            model = httpx.get(f"{url}/v1/models").json()["data"][0]
            store = args.out / f"served_scores-{model['revision'][:16]}.jsonl"
            served, aggregation, refused = served_scores(url, problems, cands, store)
    seconds = time.perf_counter() - started
    scores = baseline_scores(cands)
    if (loglik := loglik_from_run(args.run, cands)) is not None:
        scores["loglik"] = loglik
    row = f"served ({model['id']}, {aggregation})"
    scores[row] = served
    reports = verify_report(cands, scores, reference="loglik" if loglik is not None else "longest",
                            bootstrap=args.bootstrap, seed=args.seed)
    meta = {"benchmark": "served_verify", "date": now_iso(), "machine": machine_info(), "run": str(args.run),
            "checkpoint": str(args.checkpoint), "model": model, "dtype": args.dtype, "candidates": len(cands),
            "refused": refused, "seconds": round(seconds, 1)}
    (args.out / "served_verify.json").write_text(json.dumps({**meta, "reports": [r.to_dict() for r in reports]},
                                                            indent=1))
    intro = (f"# Served verifier report\n\n`POST /v1/score` on a live `python -m service` ({args.dtype}) with "
             f"`{args.checkpoint}`, its default aggregation; dev candidates of `{args.run}` ({len(cands)}, "
             f"{refused} refused and ranked last); {seconds / 60:.1f} min. Produced by "
             "`python -m benchmarks.served_verify`.\n\n")
    md = intro + report_markdown(reports, {**DESCRIPTIONS, row: "the service's score"})
    (args.out / "served_verify.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
