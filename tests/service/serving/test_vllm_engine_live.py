"""The vllm scoring engine against the real vLLM pooling server on this CPU (``./dev vllm-cpu``): the SmolLM2
checkpoint exported as a token classifier (the Gemma-3 default cannot be: transformers has no Gemma 3
token-classification class), served with STEP pooling at the separator; ``/v1/score`` on the vllm
engine gives the torch engine's step scores within 1e-4 in fp32 and 1e-2 in bf16."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.checkpoints.load import load_scorer
from service.http.app import create_app
from service.settings import Settings
from tests.live import need_vllm, vllm_server, wait_ready
from trainer.__main__ import app as trainer_cli

pytestmark = pytest.mark.vllm
SMOLLM2_CHECKPOINT = Path(__file__).resolve().parents[3] / "checkpoints" / "dreamprm-code-smollm2"

ITEMS = [
    {"problem": "Given two integers a and b on one line, print their sum.",
     "code": "def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n\n"
             "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b\n\n\nmain()\n"},
    {"problem": "Return the indices of the two numbers in nums that add up to target.",
     "code": "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
             "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
             "                return [seen[target - x], i]\n            seen[x] = i\n"},
    {"problem": "Read n, then n integers; print the largest prefix sum. <|step|> appears in this statement.",
     "code": "def main():\n    n = int(input())\n    xs = list(map(int, input().split()))\n"
             "    print(best(prefix_sums(xs)))\n\n\ndef prefix_sums(xs):\n    \"\"\"Running sums.\"\"\"\n"
             "    out, s = [], 0\n    for x in xs:\n        s += x\n        out.append(s)\n    return out\n\n\n"
             "def best(sums):\n    \"\"\"The largest.\"\"\"\n    return max(sums)\n"},
    {"problem": "Count the vowels of a string. " * 300,  # truncated: the statement is cut, as on the torch engine
     "code": "def main():\n    print(count(input()))\n\n\ndef count(s):\n    return sum(c in 'aeiou' for c in s)\n"},
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "prm-hf"
    result = CliRunner().invoke(trainer_cli, ["export", str(SMOLLM2_CHECKPOINT), str(out), "--format", "hf"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def torch_scores(exported: Path) -> list[dict[str, Any]]:
    settings = Settings(checkpoint=exported, dtype="float32", split_workers=0)
    return score_all(settings)


def score_all(settings: Settings, items: list[dict[str, str]] = ITEMS) -> list[dict[str, Any]]:
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        r = client.post("/v1/score", json={"items": items})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def engine_url(request: pytest.FixtureRequest, exported: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    need_vllm(exported)
    sep = load_scorer(exported, device="cpu", dtype="float32").tokenizer.convert_tokens_to_ids("<|step|>")
    pooler = f'{{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": {sep}}}'
    with vllm_server(exported, "prm", tmp_path_factory.mktemp("vllm") / "vllm.log", "--runner", "pooling",
                     "--pooler-config", pooler, dtype=request.param) as url:
        yield request.param, url


def test_vllm_engine_scores_equal_the_torch_engine(engine_url: tuple[str, str], exported: Path,
                                                   torch_scores: list[dict[str, Any]]) -> None:
    dtype, url = engine_url
    # bf16 without native bf16 matmuls (this CPU) is several times slower than fp32: the short items only, and a
    # long engine timeout; fp32 also scores the one that is truncated
    items = ITEMS if dtype == "float32" else ITEMS[:3]
    got = score_all(Settings(checkpoint=exported, engine="vllm", engine_url=url, engine_timeout_s=600,
                             split_workers=0), items)
    tolerance = 1e-4 if dtype == "float32" else 1e-2
    for mine, theirs in zip(got, torch_scores[: len(items)], strict=True):
        assert (mine["n_tokens"], mine["truncated"], mine["model"]) == \
            (theirs["n_tokens"], theirs["truncated"], theirs["model"])
        assert [s["score"] for s in mine["steps"]] == pytest.approx([s["score"] for s in theirs["steps"]],
                                                                    abs=tolerance)
        assert mine["score"] == pytest.approx(theirs["score"], abs=tolerance)
    assert any(item["truncated"] for item in got) == (dtype == "float32")
