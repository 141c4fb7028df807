"""OpenAIPolicy against a scripted OpenAI-compatible server: n, prefixes, retries, faults."""

from __future__ import annotations

import json

import httpx
import pytest

from service.errors import PolicyError, PolicyTimeout
from service.policy import GenerationRequest, OpenAIPolicy

MESSAGES = [{"role": "user", "content": "Write code."}]


def reply(n: int, text: str = "def main():\n    pass\n") -> httpx.Response:
    choices = [{"index": i, "message": {"role": "assistant", "content": f"{text}# {i}\n"}, "finish_reason": "stop"}
               for i in range(n)]
    return httpx.Response(200, json={"choices": choices, "usage": {"completion_tokens": 7 * n}})


def policy(handler, **kw) -> OpenAIPolicy:  # type: ignore[no-untyped-def]
    return OpenAIPolicy("http://policy.test", "m", transport=httpx.MockTransport(handler), **kw)


async def test_n_samples_and_prefix_body() -> None:
    seen: list[dict] = []  # type: ignore[type-arg]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return reply(seen[-1]["n"])

    gens = await policy(handler).generate(GenerationRequest(MESSAGES, n=3, prefix="```python\n", seed=1))
    assert len(gens) == 3 and gens[0].completion_tokens == 7
    body = seen[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "```python\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["seed"] == 1 and body["model"] == "m"


async def test_server_that_ignores_n_is_topped_up() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return reply(1)

    gens = await policy(handler).generate(GenerationRequest(MESSAGES, n=4))
    assert len(gens) == 4 and calls == 4


async def test_retries_5xx_then_succeeds() -> None:
    statuses = iter([500, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return reply(1) if status == 200 else httpx.Response(status, text="busy")

    gens = await policy(handler, retries=3).generate(GenerationRequest(MESSAGES))
    assert len(gens) == 1


@pytest.mark.parametrize(("handler", "error"), [
    (lambda r: httpx.Response(500, text="boom"), PolicyError),
    (lambda r: httpx.Response(400, text="bad request"), PolicyError),
    (lambda r: httpx.Response(200, text="{not json"), PolicyError),
    (lambda r: httpx.Response(200, json={"no": "choices"}), PolicyError),
])
async def test_faults_raise_policy_errors(handler, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        await policy(handler, retries=1).generate(GenerationRequest(MESSAGES))


async def test_unreachable_and_timeout() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(PolicyError, match="unreachable"):
        await policy(down, retries=0).generate(GenerationRequest(MESSAGES))
    with pytest.raises(PolicyTimeout):
        await policy(slow, retries=0).generate(GenerationRequest(MESSAGES))


@pytest.mark.parametrize("base_url", ["http://policy.test", "http://policy.test/", "http://policy.test/v1",
                                      "http://policy.test/v1/"])
async def test_base_url_with_or_without_v1(base_url: str) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return reply(1)

    await OpenAIPolicy(base_url, "m", transport=httpx.MockTransport(handler)).generate(GenerationRequest(MESSAGES))
    assert paths == ["/v1/chat/completions"]


@pytest.mark.parametrize("payload", [
    {"choices": []},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0}]},
    {"choices": ["text"]},
])
async def test_a_reply_with_no_usable_choice_is_retried_with_backoff_then_502(payload: dict) -> None:  # type: ignore[type-arg]
    """The audit's policy answering {"choices": []} was called 1,082 times in 5 s: now retries+1 calls, spaced."""
    import itertools
    import time

    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return httpx.Response(200, json=payload)

    with pytest.raises(PolicyError) as info:
        await policy(handler, retries=2, backoff_s=0.05).generate(GenerationRequest(MESSAGES, n=4))
    assert len(stamps) == 3  # bounded: one call and two retries, no top-up loop
    assert all(b - a >= 0.02 for a, b in itertools.pairwise(stamps))  # backoff between attempts
    message = info.value.message
    assert "no usable choice" in message and "after 3 attempts" in message and "choices" in message
    assert info.value.status_code == 502


async def test_unusable_choices_are_dropped_and_the_rest_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        good = {"index": 1, "message": {"content": "x = 1\n"}, "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": None}}, good]})

    gens = await policy(handler).generate(GenerationRequest(MESSAGES, n=1))
    assert [g.text for g in gens] == ["x = 1\n"]
