"""ScoringEngine: steps -> cache -> micro-batcher -> model -> aggregate (DESIGN §6).

Depends on the ``ScoreModel`` protocol, not on torch: ``service.model`` is imported lazily by
``ScoringEngine.start`` only, for the torch engine; the vllm engine (``service.serving.vllm_scorer``) sends the forward
pass to a vLLM pooling server and never imports torch. Forward passes run on the batcher's worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from service.aggregate import Aggregation, aggregate, sigmoid
from service.checkpoints.manifest import PRMManifest
from service.encoding import Encoded
from service.errors import InputTooLong, InvalidInput, ModelNotFound, ModelNotReady, PRMError, check_limit
from service.schemas import (
    AggregateScores,
    ModelInfo,
    ModelsResponse,
    RewardRequest,
    RewardResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    SplitRequest,
    SplitResponse,
    StepOut,
    StepScore,
)
from service.serving.batcher import MicroBatcher
from service.serving.cache import CachedScore, MemoryCache, RedisCache, ScoreCache, cache_key
from service.serving.heap import HeapTrimmer
from service.serving.metrics import Metrics
from service.serving.rl_reward import reward_items
from service.serving.split_pool import SplitPool
from service.settings import Settings
from service.steps import SplitResult, steps_from_texts

logger = logging.getLogger(__name__)


class ScoreModel(Protocol):
    name: str
    revision: str
    manifest: PRMManifest
    format: str  # the checkpoint format (service.checkpoints.detect.FORMATS)
    template: str  # the input template id

    def encode(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded: ...

    def forward(self, batch: Sequence[Encoded]) -> list[list[float]]: ...

    def warm_up(self) -> None: ...


@runtime_checkable
class OutcomeModel(Protocol):
    """An outcome reward model: ``encode`` scores the whole program, ``encode_prefixes`` every prefix."""

    outcome: bool

    def encode_prefixes(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded: ...


@runtime_checkable
class RemoteModel(Protocol):
    """A model whose forward pass runs in another server (the vllm engine): the engine waits for it to connect,
    watches its health for ``/ready``, and closes it."""

    url: str
    max_in_flight: int

    def connect(self) -> None: ...  # raises ModelNotReady until the server serves the model

    def check(self) -> str | None: ...  # why it cannot score now; None when it can

    def close(self) -> None: ...


HEALTH_EVERY_S = 5.0  # how often a remote engine's health is checked (for /ready)
CONNECT_BACKOFF_S = (1.0, 30.0)  # first and longest wait between tries to reach a remote engine


@dataclass(frozen=True, slots=True)
class _Prepared:
    split: SplitResult
    key: str
    prefixes: bool = False  # an ORM asked for every prefix's score


class ScoringEngine:
    def __init__(self, model: ScoreModel, settings: Settings, *, cache: ScoreCache | None = None,
                 metrics: Metrics | None = None) -> None:
        self.model = model
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.cache = cache or _make_cache(settings)
        self.batcher = MicroBatcher(model.forward, max_batch_tokens=settings.max_batch_tokens,
                                    max_batch_size=settings.max_batch_size,
                                    max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                                    metrics=self.metrics, after_forward=HeapTrimmer(settings.heap_trim_s),
                                    max_in_flight=getattr(model, "max_in_flight", 1))
        self.splitter = SplitPool(workers=settings.split_workers, offload_bytes=settings.split_offload_bytes)
        self.created = _created(settings.checkpoint)
        self._warm = False
        self.problem: str | None = None  # why a remote engine cannot score now (its health check)
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings, *, metrics: Metrics | None = None) -> ScoringEngine:
        """Load the checkpoint named by ``settings`` (torch engine), or reach the vLLM server that serves it
        (vllm engine: waits until it answers); warm it up and start the batcher."""
        if settings.checkpoint is None:
            raise ModelNotReady("no checkpoint configured: set DREAMPRM_CHECKPOINT or pass --checkpoint")
        model: ScoreModel
        if settings.engine == "vllm":
            from service.serving.vllm_scorer import VLLMScorer

            assert settings.engine_url is not None  # Settings requires it for the vllm engine
            key = settings.engine_api_key
            # off the event loop: the revision hashes the checkpoint's files (gigabytes for a large PRM)
            model = await asyncio.to_thread(VLLMScorer, settings.checkpoint, url=settings.engine_url,
                                            served_model=settings.engine_model,
                                            api_key=key.get_secret_value() if key else None,
                                            timeout_s=settings.engine_timeout_s, in_flight=settings.engine_in_flight,
                                            step_separator=settings.step_separator)
        else:
            from service.checkpoints.load import load_scorer  # the only torch import path of the service

            model = await asyncio.to_thread(load_scorer, settings.checkpoint, device=settings.device,
                                            dtype=settings.dtype, threads=settings.threads,
                                            trust_remote_code=settings.trust_remote_code, base=settings.base_model,
                                            step_separator=settings.step_separator)
        engine = cls(model, settings, metrics=metrics)
        await engine.open()
        return engine

    async def open(self) -> None:
        """Warm the model up with a real forward pass (on the worker thread) and start batching; a remote
        engine's health is watched from then on."""
        self.batcher.start()
        if not self._warm:
            if isinstance(self.model, RemoteModel):
                await _connect(self.model)  # retried until the engine answers, then a real forward pass
            else:
                await self.batcher.submit(self.model.encode("warm-up", ["def main():\n    pass\n"]))
            self._warm = True
        if isinstance(self.model, RemoteModel) and self._watch is None:
            self._watch = asyncio.create_task(self._watch_health(self.model), name="prm-engine-health")

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.batcher.aclose()
        await self.cache.aclose()
        self.splitter.close()
        if isinstance(self.model, RemoteModel):
            self.model.close()

    @property
    def max_tokens(self) -> int:
        """Tokens per item: the settings' limit, the checkpoint's, and a remote engine's context length."""
        return min(self.settings.max_tokens, self.model.manifest.max_tokens)

    @property
    def ready(self) -> bool:
        return self._warm and self.batcher.alive and self.problem is None

    async def _watch_health(self, model: RemoteModel) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            problem = await asyncio.to_thread(model.check)
            if problem != self.problem:
                (logger.warning if problem else logger.info)("scoring engine: %s", problem or "healthy again")
            self.problem = problem

    # --- API --------------------------------------------------------------------------------

    async def split(self, req: SplitRequest) -> SplitResponse:
        result = await self._split(req.code, req.language)
        return SplitResponse(steps=[StepOut.model_validate(s) for s in result.steps], parsed=result.parsed,
                             language=req.language)

    async def score(self, req: ScoreRequest) -> ScoreResponse | ScoreBatchResponse:
        if isinstance(req, ScoreItem):
            return await self.score_item(req)
        self.check_model(req.model)
        check_limit(len(req.items), self.settings.max_items, "{n} items in one request")
        results = await asyncio.gather(*(self._score_indexed(i, it, req) for i, it in enumerate(req.items)))
        return ScoreBatchResponse(items=list(results), model=self.model.name)

    async def _score_indexed(self, i: int, item: ScoreItem, req: ScoreBatchRequest) -> ScoreResponse:
        try:
            return await self.score_item(item, req.aggregation)
        except PRMError as exc:
            raise type(exc)(f"items[{i}]: {exc.message}", retry_after=exc.retry_after) from exc

    async def score_item(self, item: ScoreItem, fallback: Aggregation | None = None) -> ScoreResponse:
        self.check_model(item.model)
        prep = await self._prepare(item)
        texts = [s.text for s in prep.split.steps]
        hit = await self.cache.get(prep.key)
        self.metrics.cache.labels(self.cache.backend, "hit" if hit else "miss").inc()
        scored = hit
        if scored is None:
            encode = self.model.encode
            if prep.prefixes and isinstance(self.model, OutcomeModel):
                encode = self.model.encode_prefixes  # an ORM, asked for every prefix's score
            enc = await asyncio.to_thread(encode, item.problem, texts, self.max_tokens)
            logits = await self.batcher.submit(enc)
            scored = CachedScore(logits, enc.truncated, enc.n_tokens, outcome=self._outcome and not prep.prefixes)
            await self.cache.put(prep.key, scored)
        agg = item.aggregation or fallback or self.settings.default_aggregation \
            or self.model.manifest.default_aggregation
        return _response(prep.split, scored, agg, cached=hit is not None, model=self.model.name)

    async def rewards(self, req: RewardRequest) -> RewardResponse:
        """OpenRLHF's contract: one reward (the aggregate score) per query; unscorable queries get 0."""
        check_limit(len(req.query), self.settings.max_items, "{n} queries in one request")

        async def one(item: ScoreItem | str) -> float:
            if isinstance(item, str):
                return 0.0
            try:
                return (await self.score_item(item)).score
            except (InvalidInput, InputTooLong):
                return 0.0

        items = reward_items(req, self.settings.default_aggregation)
        return RewardResponse(rewards=list(await asyncio.gather(*(one(it) for it in items))))

    def check_model(self, requested: str | None) -> None:
        """A request may name the model it wants (OpenAI-style clients always do): it must be the served one."""
        if requested is not None and requested != self.model.name:
            raise ModelNotFound(f"model {requested!r} is not served here; this server serves {self.model.name!r} "
                                "(GET /v1/models); leave 'model' out to use it")

    def models(self) -> ModelsResponse:
        m = self.model.manifest
        info = ModelInfo(id=m.name, created=self.created, revision=self.model.revision, format=self.model.format,
                         template=self.model.template,
                         separator_token=m.separator_token, base_model=m.base_model.model_dump(),
                         default_aggregation=m.default_aggregation, max_tokens=self.max_tokens,
                         training=m.training, metrics=m.metrics)
        return ModelsResponse(data=[info])

    # --- helpers ----------------------------------------------------------------------------

    async def _split(self, code: str, language: str) -> SplitResult:
        result = await self.splitter.split(code, language)  # off the event loop (large ones: a process)
        check_limit(len(result.steps), self.settings.max_steps, "code has {n} steps")
        return result

    async def _prepare(self, item: ScoreItem) -> _Prepared:
        if item.steps is not None:
            check_limit(len(item.steps), self.settings.max_steps, "{n} steps given")
            split = SplitResult(steps_from_texts(item.steps), parsed=True)
        else:
            assert item.code is not None  # the schema guarantees code or steps
            split = await self._split(item.code, item.language)
        prefixes = bool(item.prefix_scores) and self._outcome
        key = cache_key(self.model.revision, self.model.template + (":prefixes" if prefixes else ""),
                        self.max_tokens, item.problem, [s.text for s in split.steps])
        return _Prepared(split, key, prefixes)

    @property
    def _outcome(self) -> bool:
        return isinstance(self.model, OutcomeModel) and self.model.outcome


async def _connect(model: RemoteModel) -> None:
    """Wait until the remote engine serves the model and scores (a vLLM server takes minutes to start), backing
    off between tries."""
    wait, longest = CONNECT_BACKOFF_S
    while True:
        try:
            await asyncio.to_thread(model.connect)
            await asyncio.to_thread(cast(ScoreModel, model).warm_up)
            return
        except ModelNotReady as exc:
            logger.warning("waiting %.0f s for the scoring engine: %s", wait, exc.message)
        await asyncio.sleep(wait)
        wait = min(wait * 2, longest)


def _created(checkpoint: Path | None) -> int:
    """When the checkpoint was written (its prm.json's mtime), for ``/v1/models``; else now."""
    try:
        return int((checkpoint / "prm.json").stat().st_mtime) if checkpoint else int(time.time())
    except OSError:
        return int(time.time())


def _make_cache(settings: Settings) -> ScoreCache:
    if settings.redis_url:
        return RedisCache(settings.redis_url, ttl_s=settings.cache_ttl_s)
    return MemoryCache(settings.cache_size)


def _response(split: SplitResult, scored: CachedScore, agg: Aggregation, *, cached: bool,
              model: str) -> ScoreResponse:
    steps = []
    # an ORM's one score belongs to the whole program: the last step shows it, the others none
    logits: list[float | None] = ([None] * (len(split.steps) - 1) + [scored.logits[0]]) if scored.outcome \
        else list(scored.logits)
    for s in split.steps:
        logit = logits[s.index] if s.index < len(logits) else None
        steps.append(StepScore(index=s.index, name=s.name, kind=s.kind, start_line=s.start_line,
                               end_line=s.end_line, context=s.context, logit=logit,
                               score=None if logit is None else sigmoid(logit)))
    # an ORM's one score is the program's; a PRM's context steps leave the aggregate (service.aggregate)
    aggregates = aggregate(scored.logits, None if scored.outcome else [s.context for s in split.steps])
    return ScoreResponse(steps=steps, aggregate=AggregateScores(**aggregates), aggregation=agg,
                         score=aggregates[agg], parsed=split.parsed, truncated=scored.truncated,
                         cached=cached, n_tokens=scored.n_tokens, model=model)
