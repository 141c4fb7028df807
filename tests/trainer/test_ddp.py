"""``accelerate launch`` with 2 CPU processes (gloo): both ranks train and end with equal weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.filterwarnings("ignore")
def test_fit_with_two_cpu_processes(tmp_path: Path) -> None:
    launcher = Path(sys.executable).with_name("accelerate")
    # --multi_gpu selects the torchrun launcher; with no GPU, Accelerator(cpu=True) runs MULTI_CPU on gloo
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "tests.trainer.ddp_fit", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # DDP kept them in sync
    assert all(h.get("train_loss", 0.0) == h.get("train_loss", 0.0) for r in ranks for h in r["history"])
