"""Policy backends behind one interface; here the OpenAI-compatible HTTP client (vLLM's server).

httpx only. ``service.local_policy`` (transformers, CPU) and ``trainer.vllm_policy`` (vLLM's
offline engine) implement the same ``Policy`` protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from service.errors import PolicyError, PolicyTimeout

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
    Retries 429/5xx/connection errors with exponential backoff and jitter.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 3
    concurrency: int = 8
    endpoint: Literal["chat", "completions"] = "chat"
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
            try:
                async with self._sem:
                    response = await self._client.post(path, json=body)
            except httpx.TimeoutException as exc:
                error: Exception = PolicyTimeout(f"policy timed out after {self.timeout_s:.0f}s")
                error.__cause__ = exc
            except httpx.TransportError as exc:
                error = PolicyError(f"policy unreachable: {exc}")
            else:
                if response.status_code == 200:
                    return _parse_choices(response, chat=self.endpoint == "chat")
                error = PolicyError(f"policy answered {response.status_code}: {response.text[:200]}")
                if response.status_code not in (408, 429) and response.status_code < 500:
                    raise error
            if attempt == self.retries:
                raise error
            delay = min(8.0, 0.5 * 2**attempt) * (0.5 + random.random())
            logger.warning("policy call failed (%s); retry %d in %.1fs", error, attempt + 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

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
    try:
        data = response.json()
        choices = data["choices"]
        usage = data.get("usage") or {}
        per_choice = int(usage.get("completion_tokens", 0)) // max(1, len(choices))
        return [Generation(text=str((c["message"]["content"] if chat else c["text"]) or ""),
                           finish_reason=str(c.get("finish_reason")),
                           completion_tokens=per_choice) for c in choices]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"policy sent a malformed reply: {response.text[:200]!r}") from exc
