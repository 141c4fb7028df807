"""A small fit for the kill -9 resume test: ``python -m tests.trainer.resume_fit DIR KILL_AFTER_SAVES``.

It kills itself with SIGKILL right after its n-th saved training state (0: never), as a crash would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

import trainer.fit
from tests.conftest import shared_data
from tests.tiny import tiny_prm
from trainer.config import FitConfig
from trainer.fit import Example, build_examples, fit, prepare_trainable
from trainer.generate import make_candidate
from trainer.records import Problem, StepLabel

CONFIG = FitConfig(model="tiny", lr=1e-2, epochs=3, batch_size=2, grad_accum=2, lora_r=4, bf16=False,
                   checkpoint_every_s=0.0)


def setup() -> tuple[Any, list[Example], int]:
    torch.manual_seed(0)
    model = tiny_prm(seed=3)
    rows = [json.loads(line) for line in shared_data("leetcodedataset_train.jsonl").read_text().splitlines()[:6]]
    problems = {r["id"]: Problem.model_validate(r) for r in rows}
    cands = [make_candidate(p, "ref", p.canonical_solution or "", policy="ref", template="t")
             for p in problems.values()]
    labels = {(c.problem_id, c.candidate_id, s.index): StepLabel(
        problem_id=c.problem_id, candidate_id=c.candidate_id, step_index=s.index, mc_label=(i % 3) / 2,
        n_rollouts=2, n_pass=1, final=False) for i, c in enumerate(cands) for s in c.steps}
    examples, _ = build_examples(model.tokenizer, model.manifest.separator_token, problems, cands, labels,
                                 max_tokens=1024)
    network = prepare_trainable(model.network, CONFIG, model.separator_id)
    return network, examples, model.pad_id


def train(resume_dir: Path | None, config: FitConfig = CONFIG) -> dict[str, torch.Tensor]:
    network, examples, pad_id = setup()
    history = fit(network, examples, examples, config, pad_id=pad_id, resume_dir=resume_dir)
    assert history
    return {n: p.detach().clone() for n, p in network.named_parameters() if p.requires_grad}


def main() -> None:
    directory, kill_after = Path(sys.argv[1]), int(sys.argv[2])
    saves = 0
    real_save = trainer.fit.save_state

    def save_then_die(where: Path, state: dict[str, Any]) -> None:
        nonlocal saves
        real_save(where, state)
        saves += 1
        if saves == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.fit.save_state = save_then_die  # type: ignore[assignment]
    train(directory)


if __name__ == "__main__":
    main()
