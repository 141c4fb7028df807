"""Experiment behind apps_at_512_tokens.md: real-v5's fit scored on the real pools' dev candidates whose problem id
starts with PREFIX, the statement cut to fit LIMIT tokens (training used 512; the service 2,048).

    python benchmarks/results/real_v5_run/apps_at_512_tokens.py LIMIT PREFIX     # e.g. 512 apps
"""

import sys
from pathlib import Path

from service.model import PRMModel
from trainer.evaluate import _score_all
from trainer.ranking import report_markdown
from trainer.rundir import executed_candidates, run_problems
from trainer.verify import baseline_scores, prm_scores, verify_report

run = Path("runs/real-v5")
limit, prefix = int(sys.argv[1]), sys.argv[2]
cands = [c for c in executed_candidates(run, "dev") if c.provenance == "pool" and c.problem_id.startswith(prefix)]
problems = {p.id: p for p in run_problems(run, "dev")}
model = PRMModel.load(run / "fit/checkpoint", device="cpu", dtype="float32")
model.max_tokens = limit
logits = _score_all(model, problems, cands, cache=run / f"scratch-mt{limit}", name="prm")
print(sum(1 for values in logits if not values), "unscored")
scores = baseline_scores(cands) | prm_scores("prm", logits, cands)
print(report_markdown(verify_report(cands, scores, reference="longest", bootstrap=1000, seed=0)[:4]))
