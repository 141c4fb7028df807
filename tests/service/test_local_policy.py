"""TransformersPolicy on a tiny random causal LM: n samples, prefixes, seeds, token limits."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from service.local_policy import TransformersPolicy
from service.policy import GenerationRequest
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
