"""TransformersPolicy on a tiny random causal LM: n samples, prefixes, seeds, token limits."""

from __future__ import annotations

import time

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import LlamaConfig, LlamaForCausalLM

from service.http.app import create_app
from service.policy import Generation, GenerationRequest
from service.policy.local import TransformersPolicy
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.tiny import tiny_tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def policy() -> TransformersPolicy:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    return TransformersPolicy(model.eval(), tok, name="tiny")


async def test_samples_n_with_prefix(policy: TransformersPolicy) -> None:
    request = GenerationRequest([{"role": "user", "content": "Write code."}], n=3, prefix="```python\n",
                                max_tokens=6, seed=7)
    gens = await policy.generate(request)
    assert len(gens) == 3
    assert all(0 < g.completion_tokens <= 6 and g.finish_reason in ("stop", "length") for g in gens)
    again = await policy.generate(request)
    assert [g.text for g in again] == [g.text for g in gens]  # seeded


async def test_greedy_is_deterministic(policy: TransformersPolicy) -> None:
    request = GenerationRequest([{"role": "user", "content": "x"}], n=1, temperature=0.0, max_tokens=4)
    assert (await policy.generate(request))[0].text == (await policy.generate(request))[0].text


def test_rerank_with_the_embedded_policy(policy: TransformersPolicy, settings: Settings,
                                         engine: ScoringEngine) -> None:
    """The in-process policy behind /v1/rerank: one batched generate call for all n samples."""
    calls: list[GenerationRequest] = []
    original = policy.generate_sync

    def spy(request: GenerationRequest) -> list[Generation]:
        calls.append(request)
        return original(request)

    policy.generate_sync = spy  # type: ignore[method-assign]
    try:
        with TestClient(create_app(settings.model_copy(update={"policy_max_tokens": 16}), engine=engine,
                                   policy=policy)) as client:
            r = client.post("/v1/rerank", json={"problem": "Print 1.", "n": 3, "policy": {"seed": 1}})
    finally:
        policy.generate_sync = original  # type: ignore[method-assign]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy_usage"]["policy"] == "tiny" and body["policy_usage"]["returned"] == 3
    assert len(calls) == 1 and calls[0].n == 3 and calls[0].max_tokens == 16
    assert calls[0].timeout_s == settings.policy_timeout_s  # the local policy stops itself at the deadline
    assert len(body["ranking"]) == 3  # random tokens: scored, or ranked last with an error


async def test_time_budget_cuts_generation(policy: TransformersPolicy) -> None:
    request = GenerationRequest([{"role": "user", "content": "x"}], n=2, max_tokens=100_000, timeout_s=0.2)
    started = time.monotonic()
    gens = await policy.generate(request)
    assert time.monotonic() - started < 5  # without the budget: 100k tokens (or a crash past 2048 positions)
    # a random model may emit EOS first ("stop"); nothing reaches the token limit
    assert ({g.finish_reason for g in gens} <= {"timeout", "stop"} and "timeout" in {g.finish_reason for g in gens}) \
        or all(g.completion_tokens < 2048 for g in gens)
