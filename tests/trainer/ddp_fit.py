"""Run by ``accelerate launch --cpu --num_processes 2``: the fit stage's loop on a tiny PRM; each
rank writes its world size, final loss and a checksum of its parameters to OUT_DIR/rank<k>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tests.tiny import tiny_prm
from trainer.config import FitConfig
from trainer.fit import Example, fit, prepare_trainable


def main(out_dir: Path) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    model = tiny_prm(seed=5)  # same init on every rank
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i in range(16):
        ids = torch.randint(3, 300, (40 + i,), generator=gen).tolist()
        positions = [10, 25, 39 + i]
        for p in positions:
            ids[p] = model.separator_id
        examples.append(Example(f"p{i}", "c", ids, positions, [1.0, 0.0, float(i % 2)], [3 * i, 3 * i + 1, 3 * i + 2]))
    cfg = FitConfig(model="tiny", lr=1e-2, epochs=2, batch_size=2, grad_accum=2, lora=False, bf16=False)
    network = prepare_trainable(model.network, cfg, model.separator_id)
    history = fit(network, examples, examples[:4], cfg, pad_id=model.pad_id)
    checksum = float(sum(p.detach().double().sum() for p in network.parameters()))
    (out_dir / f"rank{state.process_index}.json").write_text(json.dumps(
        {"world_size": state.num_processes, "checksum": checksum, "history": history}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
