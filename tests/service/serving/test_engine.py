"""``ScoringEngine`` on the fake model, without HTTP: scores at the separators, the cache, the limits, the model
name, batch errors that say which item, and the RL reward contract."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import InputTooLong, InvalidInput, ModelNotFound
from service.schemas import RewardRequest, ScoreBatchRequest, ScoreItem
from service.serving.engine import ScoringEngine
from service.settings import Settings
from service.steps import split_code
from tests.fakes import FakeModel, logit_at

CODE = "import os\n\ndef main():\n    return helper()\n\ndef helper():\n    return 2\n"
TEXTS = [s.text for s in split_code(CODE).steps]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[ScoringEngine]:
    settings = Settings(checkpoint=tmp_path, max_wait_ms=1.0, policy="none", max_steps=4, max_items=3)
    eng = ScoringEngine(FakeModel(), settings)
    await eng.open()
    yield eng
    await eng.aclose()


async def test_scores_are_the_model_logits_at_the_step_ends(engine: ScoringEngine) -> None:
    resp = await engine.score_item(ScoreItem(problem="Return 2.", code=CODE, aggregation="min"))
    enc = engine.model.encode("Return 2.", TEXTS)
    assert [s.name for s in resp.steps] == ["preamble", "main", "helper"]
    assert [s.logit for s in resp.steps] == pytest.approx([logit_at(enc.input_ids, p)
                                                           for p in enc.step_end_positions])
    assert all(s.score == pytest.approx(1 / (1 + math.exp(-s.logit))) for s in resp.steps if s.logit is not None)
    assert resp.score == resp.aggregate.min == min(s.score for s in resp.steps if s.score is not None)
    assert not resp.cached and not resp.truncated and resp.model == "fake-prm"


async def test_a_repeated_item_is_answered_from_the_cache(engine: ScoringEngine) -> None:
    model = engine.model
    assert isinstance(model, FakeModel)
    first = await engine.score_item(ScoreItem(problem="p", code=CODE))
    forwards = list(model.batches)
    again = await engine.score_item(ScoreItem(problem="p", code=CODE, aggregation="last"))
    assert again.cached and model.batches == forwards  # no forward pass for it
    assert [s.logit for s in again.steps] == [s.logit for s in first.steps] and again.score == again.aggregate.last
    assert not (await engine.score_item(ScoreItem(problem="q", code=CODE))).cached


async def test_given_steps_score_like_the_same_split(engine: ScoringEngine) -> None:
    split = await engine.score_item(ScoreItem(problem="p", code=CODE))
    given = await engine.score_item(ScoreItem(problem="p", steps=TEXTS))
    assert [s.logit for s in given.steps] == pytest.approx([s.logit for s in split.steps])
    assert [s.name for s in given.steps] == ["step_0", "step_1", "step_2"]


async def test_limits_and_the_model_name(engine: ScoringEngine) -> None:
    many = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(5))
    with pytest.raises(InputTooLong, match=r"^code has 5 steps; the limit is 4$"):
        await engine.score_item(ScoreItem(problem="p", code=many))
    with pytest.raises(InputTooLong, match=r"^5 steps given; the limit is 4$"):
        await engine.score_item(ScoreItem(problem="p", steps=["x = 1\n"] * 5))
    with pytest.raises(InputTooLong, match=r"^4 items in one request; the limit is 3$"):
        await engine.score(ScoreBatchRequest(items=[ScoreItem(problem="p", code=CODE)] * 4))
    with pytest.raises(ModelNotFound):
        await engine.score_item(ScoreItem(problem="p", code=CODE, model="another-prm"))


async def test_a_batch_error_names_its_item(engine: ScoringEngine) -> None:
    items = [ScoreItem(problem="p", code=CODE), ScoreItem(problem="p", code="# only a comment\n")]
    with pytest.raises(InvalidInput, match=r"^items\[1\]: "):
        await engine.score(ScoreBatchRequest(items=items))


async def test_rewards_are_the_scores_and_zero_for_what_cannot_be_scored(engine: ScoringEngine) -> None:
    fenced = "Return 2.\n```python\n" + CODE + "```\n"
    resp = await engine.rewards(RewardRequest(query=[fenced, "Return 2.\n```python\n\n```\n"]))  # an empty block
    expected = (await engine.score_item(ScoreItem(problem="Return 2.", code=CODE))).score
    assert resp.rewards == pytest.approx([expected, 0.0])
