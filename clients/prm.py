"""Python SDK of the DreamPRM-Code service: ``PRMClient`` (sync) and ``AsyncPRMClient`` (asyncio), in one module
because they share request building and error mapping (``_Base``) and differ only in transport.

Requests and responses are the service's own pydantic schemas (``service.schemas``); an error body
comes back as the same exception class the service raised (``service.errors``), and a request the
client itself finds invalid raises ``service.errors.ValidationFailed`` before anything is sent.

Only what is safe to send again is retried: a connection that could not be made (nothing was sent),
and 429/503 answers (the service did no work), honouring ``Retry-After``. A request that was sent but
timed out (``read_timeout_s``) or lost its connection raises ``ServiceTimeout`` / ``ConnectionLost`` and
is not sent again unless ``retry_timeouts=True``: a generated rerank would be generated twice.

Example:
    >>> with PRMClient("http://127.0.0.1:8000") as prm:            # doctest: +SKIP
    ...     result = prm.score("Print the sum of two integers.", code)
    ...     print(result.score, [s.score for s in result.steps])
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from service.aggregate import Aggregation
from service.errors import ERROR_TYPES, PRMError, validation_failed
from service.schemas import (
    ModelsResponse,
    PolicyOptions,
    PublicTest,
    ReadyResponse,
    RerankRequest,
    RerankResponse,
    RewardRequest,
    RewardResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreItem,
    ScoreResponse,
    SplitRequest,
    SplitResponse,
)
from service.steps import Language

P = ParamSpec("P")
R = TypeVar("R")
RETRY_STATUS = frozenset({429, 503})
DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceUnreachable(PRMError):
    """The service could not be reached (connection refused, DNS, connect timeout) after every retry."""

    type = "unreachable"


class ConnectionLost(ServiceUnreachable):
    """The request was sent but the connection failed before the answer: the service may have done the work."""

    type = "connection_lost"


class ServiceTimeout(ConnectionLost):
    """The request was sent but no answer came within ``read_timeout_s`` (it may still be running there)."""

    type = "timeout"


def _transport_error(exc: httpx.TransportError, base_url: str) -> ServiceUnreachable:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ServiceUnreachable(f"cannot reach {base_url}: {exc!r}")  # nothing was sent
    if isinstance(exc, httpx.TimeoutException):
        return ServiceTimeout(f"{base_url} did not answer in time ({type(exc).__name__}); the request was not "
                              "sent again (retry_timeouts=True resends it)")
    return ConnectionLost(f"connection to {base_url} failed mid-request: {exc!r}; not sent again")


def _validated(build: Callable[P, R]) -> Callable[P, R]:
    """Client-side validation raises the service's ``ValidationFailed``, as the server would answer."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return build(*args, **kwargs)
        except ValidationError as exc:
            raise validation_failed(exc.errors()) from None

    return wrapper


def error_from_response(response: httpx.Response) -> PRMError:
    """The exception for a non-2xx response: the class named by the error body's ``type``."""
    retry_after = _retry_after(response)
    try:
        error = response.json()["error"]
        cls = ERROR_TYPES.get(str(error["type"]), PRMError)
        exc = cls(str(error["message"]), retry_after=retry_after)
    except (ValueError, KeyError, TypeError):
        exc = PRMError(f"HTTP {response.status_code}: {response.text[:300]}", retry_after=retry_after)
    exc.status_code = response.status_code  # what this server said, even for an unknown type
    return exc


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    body: BaseModel | None
    model: type[BaseModel]


@_validated
def _split_call(code: str, language: Language) -> _Call:
    return _Call("POST", "/v1/split", SplitRequest(code=code, language=language), SplitResponse)


@_validated
def _score_call(problem: str, code: str | None, steps: Sequence[str] | None, language: Language,
                aggregation: Aggregation | None, prefix_scores: bool = False, run_examples: bool = False) -> _Call:
    item = ScoreItem(problem=problem, code=code, steps=list(steps) if steps is not None else None,
                     language=language, aggregation=aggregation, prefix_scores=prefix_scores,
                     run_examples=run_examples)
    return _Call("POST", "/v1/score", item, ScoreResponse)


@_validated
def _batch_call(items: Sequence[ScoreItem | Mapping[str, Any]], aggregation: Aggregation | None) -> _Call:
    parsed = [i if isinstance(i, ScoreItem) else ScoreItem.model_validate(i) for i in items]
    return _Call("POST", "/v1/score", ScoreBatchRequest(items=parsed, aggregation=aggregation), ScoreBatchResponse)


@_validated
def _rerank_call(problem: str, candidates: Sequence[str] | None, n: int | None,
                 public_tests: Sequence[PublicTest | Mapping[str, Any]] | None,
                 policy: PolicyOptions | Mapping[str, Any] | None, examples: Literal["auto", "off"],
                 extra: Mapping[str, Any]) -> _Call:
    body = RerankRequest.model_validate({
        "problem": problem, "candidates": list(candidates) if candidates is not None else None, "n": n,
        "examples": examples,
        "public_tests": [t if isinstance(t, PublicTest) else PublicTest.model_validate(t) for t in public_tests]
        if public_tests is not None else None,
        "policy": policy, **extra})
    return _Call("POST", "/v1/rerank", body, RerankResponse)


@_validated
def _reward_call(queries: Sequence[str], prompts: Sequence[str] | None) -> _Call:
    body = RewardRequest(query=list(queries), prompts=list(prompts) if prompts is not None else None)
    return _Call("POST", "/get_reward", body, RewardResponse)


class _Base:
    """What both clients share: the retry policy, timeouts, and turning responses into models or errors.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>``.
        connect_timeout_s: to open a connection (a failure here is retried: nothing was sent).
        read_timeout_s: for the answer, once sent (a generated rerank can take minutes).
        retries: further attempts after a connection failure or a 429/503.
        max_backoff_s: the longest wait between attempts (``Retry-After`` is honoured up to it).
        retry_timeouts: also resend a request that was sent and then timed out or lost its connection.
    """

    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout_s: float, read_timeout_s: float,
                 retries: int, max_backoff_s: float, retry_timeouts: bool) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self.retries = retries
        self.max_backoff_s = max_backoff_s
        self.retry_timeouts = retry_timeouts

    def _retry_delay(self, attempt: int, error: PRMError) -> float:
        """Seconds to wait before attempt ``attempt + 1``; raises ``error`` when it must not be retried."""
        if attempt >= self.retries or not self._retryable(error):
            raise error
        if error.retry_after is not None:
            return min(self.max_backoff_s, float(error.retry_after))
        return min(self.max_backoff_s, 0.25 * 2.0**attempt) * (0.5 + random.random())

    def _retryable(self, error: PRMError) -> bool:
        if isinstance(error, ConnectionLost):
            return self.retry_timeouts
        return isinstance(error, ServiceUnreachable) or error.status_code in RETRY_STATUS

    @staticmethod
    def _outcome(call: _Call, response: httpx.Response) -> BaseModel | PRMError:
        if response.is_success:
            return call.model.model_validate_json(response.content)
        return error_from_response(response)

    @staticmethod
    def _kwargs(call: _Call) -> dict[str, Any]:
        if call.body is None:
            return {}
        return {"content": call.body.model_dump_json(exclude_none=True),
                "headers": {"Content-Type": "application/json"}}


class PRMClient(_Base):
    """Blocking client. Use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 300.0, retries: int = 3, max_backoff_s: float = 30.0,
                 retry_timeouts: bool = False, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                         retries=retries, max_backoff_s=max_backoff_s, retry_timeouts=retry_timeouts)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def __enter__(self) -> PRMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        for attempt in itertools.count():
            try:
                outcome = self._outcome(call, self._http.request(call.method, call.path, **self._kwargs(call)))
            except httpx.TransportError as exc:
                outcome = _transport_error(exc, self.base_url)
            if not isinstance(outcome, PRMError):
                return outcome
            time.sleep(self._retry_delay(attempt, outcome))
        raise AssertionError("unreachable")

    def split(self, code: str, language: Language = "python") -> SplitResponse:
        result: SplitResponse = self._send(_split_call(code, language))
        return result

    def score(self, problem: str, code: str | None = None, *, steps: Sequence[str] | None = None,
              language: Language = "python", aggregation: Aggregation | None = None,
              prefix_scores: bool = False, run_examples: bool = False) -> ScoreResponse:
        """``prefix_scores``: an outcome reward model scores every prefix (one score per step); ``run_examples``:
        also run the statement's examples (``result.examples``); the score is unchanged."""
        result: ScoreResponse = self._send(_score_call(problem, code, steps, language, aggregation, prefix_scores,
                                                       run_examples))
        return result

    def score_batch(self, items: Sequence[ScoreItem | Mapping[str, Any]],
                    aggregation: Aggregation | None = None) -> ScoreBatchResponse:
        result: ScoreBatchResponse = self._send(_batch_call(items, aggregation))
        return result

    def rerank(self, problem: str, candidates: Sequence[str] | None = None, *, n: int | None = None,
               public_tests: Sequence[PublicTest | Mapping[str, Any]] | None = None,
               policy: PolicyOptions | Mapping[str, Any] | None = None, examples: Literal["auto", "off"] = "auto",
               **extra: Any) -> RerankResponse:
        """``examples``: without ``public_tests``, run the statement's worked examples ("auto") or not ("off").
        ``extra``: the other fields of ``RerankRequest`` (language, starter_code, entry_point, aggregation)."""
        result: RerankResponse = self._send(_rerank_call(problem, candidates, n, public_tests, policy, examples,
                                                         extra))
        return result

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None) -> list[float]:
        result: RewardResponse = self._send(_reward_call(queries, prompts))
        return result.rewards

    def models(self) -> ModelsResponse:
        result: ModelsResponse = self._send(_Call("GET", "/v1/models", None, ModelsResponse))
        return result

    def ready(self) -> bool:
        """True when the service has its model loaded and warmed up (never raises for "not yet")."""
        try:
            response = self._http.get("/ready", timeout=self.timeout.connect)
        except httpx.TransportError:
            return False
        return _is_ready(response)

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        """Block until ``ready()``; raises ``ServiceUnreachable`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServiceUnreachable(f"{self.base_url} was not ready after {timeout_s:.0f}s")
            time.sleep(poll_s)


class AsyncPRMClient(_Base):
    """The asyncio client (same methods, awaitable). Use with ``async with`` or call ``aclose()``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 300.0, retries: int = 3, max_backoff_s: float = 30.0,
                 retry_timeouts: bool = False, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                         retries=retries, max_backoff_s=max_backoff_s, retry_timeouts=retry_timeouts)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncPRMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        for attempt in itertools.count():
            try:
                response = await self._http.request(call.method, call.path, **self._kwargs(call))
                outcome = self._outcome(call, response)
            except httpx.TransportError as exc:
                outcome = _transport_error(exc, self.base_url)
            if not isinstance(outcome, PRMError):
                return outcome
            await asyncio.sleep(self._retry_delay(attempt, outcome))
        raise AssertionError("unreachable")

    async def split(self, code: str, language: Language = "python") -> SplitResponse:
        result: SplitResponse = await self._send(_split_call(code, language))
        return result

    async def score(self, problem: str, code: str | None = None, *, steps: Sequence[str] | None = None,
                    language: Language = "python", aggregation: Aggregation | None = None,
                    prefix_scores: bool = False, run_examples: bool = False) -> ScoreResponse:
        """``prefix_scores``: an outcome reward model scores every prefix (one score per step); ``run_examples``:
        also run the statement's examples (``result.examples``); the score is unchanged."""
        result: ScoreResponse = await self._send(_score_call(problem, code, steps, language, aggregation,
                                                             prefix_scores, run_examples))
        return result

    async def score_batch(self, items: Sequence[ScoreItem | Mapping[str, Any]],
                          aggregation: Aggregation | None = None) -> ScoreBatchResponse:
        result: ScoreBatchResponse = await self._send(_batch_call(items, aggregation))
        return result

    async def rerank(self, problem: str, candidates: Sequence[str] | None = None, *, n: int | None = None,
                     public_tests: Sequence[PublicTest | Mapping[str, Any]] | None = None,
                     policy: PolicyOptions | Mapping[str, Any] | None = None,
                     examples: Literal["auto", "off"] = "auto", **extra: Any) -> RerankResponse:
        result: RerankResponse = await self._send(_rerank_call(problem, candidates, n, public_tests, policy,
                                                               examples, extra))
        return result

    async def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None) -> list[float]:
        result: RewardResponse = await self._send(_reward_call(queries, prompts))
        return result.rewards

    async def models(self) -> ModelsResponse:
        result: ModelsResponse = await self._send(_Call("GET", "/v1/models", None, ModelsResponse))
        return result

    async def ready(self) -> bool:
        """True when the service has its model loaded and warmed up (never raises for "not yet")."""
        try:
            response = await self._http.get("/ready", timeout=self.timeout.connect)
        except httpx.TransportError:
            return False
        return _is_ready(response)

    async def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        """Wait until ``ready()``; raises ``ServiceUnreachable`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not await self.ready():
            if time.monotonic() > deadline:
                raise ServiceUnreachable(f"{self.base_url} was not ready after {timeout_s:.0f}s")
            await asyncio.sleep(poll_s)


def _is_ready(response: httpx.Response) -> bool:
    try:
        return response.status_code == 200 and ReadyResponse.model_validate_json(response.content).ready
    except ValidationError:
        return False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
