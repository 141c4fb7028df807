"""HTTP routes: one line of work each; the engine does the rest. No torch here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import Discriminator, Tag

from service.errors import ModelNotReady
from service.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
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
from service.serving.engine import ScoringEngine
from service.serving.rerank import Reranker

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)
}
POLICY_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (502, 504)}
router = APIRouter(responses=ERRORS)


def get_engine(request: Request) -> ScoringEngine:
    engine: ScoringEngine | None = request.app.state.engine
    if engine is None:
        raise ModelNotReady(request.app.state.load_error or "the model is still loading")
    return engine


EngineDep = Annotated[ScoringEngine, Depends(get_engine)]


def get_reranker(request: Request, engine: EngineDep) -> Reranker:
    reranker: Reranker = request.app.state.reranker
    return reranker


RerankerDep = Annotated[Reranker, Depends(get_reranker)]


def _score_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "items" in value else "item"


ScoreBody = Annotated[
    Annotated[ScoreItem, Tag("item")] | Annotated[ScoreBatchRequest, Tag("batch")],
    Discriminator(_score_kind),
    Body(description="one item, or a batch as {items: [...]}"),
]


@router.post("/v1/split")
async def split(req: SplitRequest, engine: EngineDep) -> SplitResponse:
    """Split code into function steps."""
    return await engine.split(req)


@router.post("/v1/score")
async def score(req: ScoreBody, reranker: RerankerDep) -> ScoreResponse | ScoreBatchResponse:
    """Score every step of one candidate, or of each item of a batch."""
    return await reranker.score(req)


@router.post("/v1/rerank", responses=POLICY_ERRORS)
async def rerank(req: RerankRequest, reranker: RerankerDep) -> RerankResponse:
    """Rank given candidates, or generate n Chain-of-Function candidates with the policy and rank them."""
    return await reranker.rerank(req)


@router.post("/get_reward")
async def get_reward(req: RewardRequest, engine: EngineDep) -> RewardResponse:
    """OpenRLHF's remote reward model: {"query": [prompt + response, ...]} -> {"rewards": [...]}."""
    return await engine.rewards(req)


@router.get("/v1/models")
async def models(engine: EngineDep) -> ModelsResponse:
    """The loaded checkpoint and its prm.json summary."""
    return engine.models()


@router.get("/health")
async def health(request: Request) -> HealthResponse:
    """The process is alive (and did not fail to load its model)."""
    if request.app.state.load_error:
        raise ModelNotReady(request.app.state.load_error)
    return HealthResponse()


@router.get("/ready", responses={503: {"model": ReadyResponse}})
async def ready(request: Request, response: Response) -> ReadyResponse:
    """True once a real warm-up forward pass ran, while the batch worker is alive and (vllm engine) while the
    engine's server answers its health check."""
    engine: ScoringEngine | None = request.app.state.engine
    sandbox = request.app.state.sandbox_isolation
    if engine is not None and engine.ready:
        return ReadyResponse(ready=True, model=engine.model.name, sandbox=sandbox)
    detail = request.app.state.load_error or ((engine.problem or "scoring worker stopped") if engine else "loading")
    response.status_code = 503
    return ReadyResponse(ready=False, detail=detail, sandbox=sandbox)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)
