"""A fit killed with SIGKILL resumes from its last saved state and ends where an uninterrupted fit ends."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.resume_fit import train
from trainer.resume import RESUME_FILE

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[2]


def test_fit_resumes_after_kill_9(tmp_path: Path) -> None:
    reference = train(None)
    for kill_after in (3, 5):  # killed twice: mid-epoch, then again after resuming
        proc = subprocess.run([sys.executable, "-m", "tests.trainer.resume_fit", str(tmp_path), str(kill_after)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert (tmp_path / RESUME_FILE).is_file()
    resumed = train(tmp_path)
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("group_by_length", [0, 2])
def test_a_step_budget_stops_mid_epoch_and_a_larger_one_goes_on_exactly(tmp_path: Path, group_by_length: int,
                                                                         ) -> None:
    """fit.max_steps: a fit stopped after 1 optimizer step (batch 2 of the first epoch's 3) and resumed without
    a budget ends where one uninterrupted fit ends; with micro-batches grouped by length too."""
    import dataclasses

    from tests.trainer.resume_fit import CONFIG

    config = dataclasses.replace(CONFIG, group_by_length=group_by_length)
    reference = train(None, config)
    stopped = train(tmp_path, dataclasses.replace(config, max_steps=1))
    assert any(not torch.equal(stopped[n], v) for n, v in reference.items())  # it did stop early
    resumed = train(tmp_path, config)
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_state_of_another_model_is_refused(tmp_path: Path) -> None:
    from trainer.resume import restore_trainable

    with pytest.raises(ValueError, match=r"resume\.pt"):
        restore_trainable(torch.nn.Linear(2, 2), {"nope": torch.zeros(1)})


def test_the_dev_loss_on_an_evenly_spread_subset() -> None:
    import dataclasses

    from tests.trainer.resume_fit import CONFIG, setup
    from trainer.fit import evaluate_loss, fit

    network, examples, pad_id = setup()
    config = dataclasses.replace(CONFIG, epochs=1, dev_limit=2)
    history = fit(network, examples, examples, config, pad_id=pad_id)
    spread = [examples[0], examples[len(examples) // 2]]
    assert history[-1]["dev_loss"] == pytest.approx(evaluate_loss(network, spread, pad_id))
    assert history[-1]["dev_loss"] != pytest.approx(evaluate_loss(network, examples, pad_id))


def test_length_grouped_batches_pad_less_and_cover_each_example_once() -> None:
    import random

    from trainer.fit import length_grouped_batches

    rng = random.Random(7)
    lengths = [rng.randint(20, 512) for _ in range(1001)]
    batches = length_grouped_batches(lengths, 4, 16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1001))
    assert batches == length_grouped_batches(lengths, 4, 16, seed=3) != length_grouped_batches(lengths, 4, 16, 4)
    assert sum(len(b) < 4 for b in batches) <= math.ceil(1001 / 64)  # only a window's last batch is short

    def padded(bs: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    plain = [list(range(1001))[j:j + 4] for j in range(0, 1001, 4)]
    assert padded(batches) < 0.8 * padded(plain)
