"""The wire contract of the HTTP API (DESIGN §5). Pydantic only; ``clients/`` imports it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.aggregate import Aggregation
from service.steps import Language, StepKind

Text = Annotated[str, Field(min_length=1)]
ModelName = Annotated[str | None, Field(max_length=256, description=(
    "the PRM to use, as GET /v1/models lists it (OpenAI-style clients always send one); default: the served "
    "one; an unknown name is a 404"))]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepOut(BaseModel):
    index: int
    kind: StepKind
    name: str
    start_line: int
    end_line: int
    start_byte: int
    end_byte: int
    text: str


class SplitRequest(_Request):
    code: Text = Field(description="program source")
    language: Language = "python"


class SplitResponse(BaseModel):
    steps: list[StepOut]
    parsed: bool = Field(description="false when the tolerant fallback splitter was used")
    language: Language


class ScoreItem(_Request):
    """One candidate: give ``code`` (split by the service) or ready-made ``steps``."""

    problem: str = Field(max_length=1 << 20, description="problem statement")
    code: Text | None = None
    steps: list[Text] | None = Field(default=None, min_length=1,
                                     description="step texts; they are concatenated as the program")
    language: Language = "python"
    aggregation: Aggregation | None = Field(default=None, description="default: the checkpoint's")
    model: ModelName = None

    @model_validator(mode="after")
    def _code_or_steps(self) -> ScoreItem:
        if (self.code is None) == (self.steps is None):
            raise ValueError("give exactly one of 'code' or 'steps'")
        return self


class ScoreBatchRequest(_Request):
    items: list[ScoreItem] = Field(min_length=1)
    aggregation: Aggregation | None = Field(default=None, description="applies to items that set none")
    model: ModelName = None


ScoreRequest = ScoreItem | ScoreBatchRequest


class StepScore(BaseModel):
    index: int
    name: str
    kind: StepKind
    start_line: int
    end_line: int
    score: float | None = Field(description="P(still on a correct path); null if not scored (too long)")
    logit: float | None


class AggregateScores(BaseModel):
    min: float
    mean: float
    last: float
    product: float
    logodds: float


class ScoreResponse(BaseModel):
    steps: list[StepScore]
    aggregate: AggregateScores
    aggregation: Aggregation
    score: float = Field(description="the chosen aggregate")
    parsed: bool
    truncated: bool
    cached: bool
    n_tokens: int
    model: str


class ScoreBatchResponse(BaseModel):
    items: list[ScoreResponse]
    model: str


class ModelInfo(BaseModel):
    """One served PRM: OpenAI's model object (``id``, ``object``, ``created``, ``owned_by``) plus its prm.json."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the checkpoint was written (its prm.json)")
    owned_by: str = "dreamprm-code"
    revision: str
    template: str
    separator_token: str
    base_model: dict[str, Any]
    default_aggregation: Aggregation
    max_tokens: int
    training: dict[str, Any]
    metrics: dict[str, Any]


class ModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str | None = None
    detail: str | None = None


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PublicTest(_Request):
    """A test the caller can show us: stdin ``input`` + expected ``output``, or Python ``code`` (asserts)."""

    input: str | None = None
    output: str | None = None
    code: str | None = Field(default=None, description="Python run after the program, e.g. assert f(2) == 4")

    @model_validator(mode="after")
    def _one_kind(self) -> PublicTest:
        if (self.code is None) == (self.output is None):
            raise ValueError("a public test is either {input, output} or {code}")
        return self


class PolicyOptions(_Request):
    model: str | None = Field(default=None, description="policy model name (default: the configured one)")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=16, le=8192)
    seed: int | None = None


class RerankDocument(BaseModel):
    """A document of the rerank APIs of Cohere, Jina and vLLM: ``{"text": ...}`` (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    text: Text


class RerankRequest(_Request):
    """Rank the given ``candidates``, or ``n`` Chain-of-Function candidates generated by the policy.

    The shape of the usual rerank APIs (vLLM, Jina, Cohere, TEI clients) is accepted too: ``query`` for
    ``problem``, ``documents`` for ``candidates``, ``top_n``; the answer then also carries ``results``.
    """

    problem: str = Field(default="", max_length=1 << 20, description="problem statement (required, or `query`)")
    candidates: list[Text] | None = Field(default=None, min_length=1,
                                          description="programs or LLM replies (the fenced code is used)")
    query: str | None = Field(default=None, max_length=1 << 20, description="rerank-API name of `problem`")
    documents: list[Text | RerankDocument] | None = Field(
        default=None, min_length=1, description="rerank-API name of `candidates`: strings or {text} objects")
    top_n: int | None = Field(default=None, ge=1, description="how many `results` to return (the ranking is whole)")
    return_documents: bool = Field(default=True, description="`results[].document` carries the candidate's text")
    model: ModelName = None
    n: int | None = Field(default=None, ge=1, le=256, description="candidates to generate when none are given")
    language: Language = "python"
    starter_code: str | None = Field(default=None, max_length=1 << 16, description="for function problems")
    entry_point: str | None = Field(default=None, max_length=256)
    policy: PolicyOptions | None = None
    public_tests: list[PublicTest] | None = Field(default=None, description="run in the sandbox; passing first")
    aggregation: Aggregation | None = None

    @model_validator(mode="after")
    def _candidates_or_n(self) -> RerankRequest:
        if self.query is not None:
            if self.problem:
                raise ValueError("give 'problem' or 'query', not both")
            self.problem = self.query
        if not self.problem:
            raise ValueError("give the problem statement as 'problem' (or 'query')")
        if self.documents is not None:
            if self.candidates is not None:
                raise ValueError("give 'candidates' or 'documents', not both")
            self.candidates = [d if isinstance(d, str) else d.text for d in self.documents]
        if self.candidates is not None and self.n is not None:
            raise ValueError("give 'candidates' or 'n', not both")
        if self.public_tests and len({t.code is None for t in self.public_tests}) > 1:
            raise ValueError("public_tests must be all {input, output} or all {code}")
        return self


class TestOutcome(BaseModel):
    __test__ = False  # not a pytest class
    passed: bool
    n_tests: int
    n_passed: int
    status: str = Field(description="passed | wrong_answer | runtime_error | timeout | memory | ...")


class RankedCandidate(BaseModel):
    index: int = Field(description="position among the candidates (given or generated)")
    rank: int
    source: Literal["given", "policy"]
    code: str
    score: float | None = Field(description="the chosen aggregate; null when the candidate could not be scored")
    aggregate: AggregateScores | None
    steps: list[StepScore]
    tests_passed: bool | None = Field(description="all public tests passed; null when none were given")
    tests: TestOutcome | None
    finish_reason: str | None = Field(default=None, description="the policy's, for generated candidates")
    error: str | None = Field(default=None, description="why it was not scored")


class PolicyUsage(BaseModel):
    policy: str
    requested: int
    returned: int
    completion_tokens: int
    partial: bool = Field(description="the policy failed or timed out before every sample arrived")
    errors: list[str]


class Timings(BaseModel):
    generate_ms: float
    tests_ms: float
    score_ms: float
    total_ms: float


class RerankResult(BaseModel):
    """One entry of ``results``, the shape rerank-API clients read (vLLM, Jina, Cohere)."""

    index: int
    relevance_score: float = Field(description="the candidate's score (0 when it could not be scored)")
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    best_index: int | None = Field(description="index of the top candidate; null when none could be scored")
    ranking: list[RankedCandidate]
    aggregation: Aggregation
    policy_usage: PolicyUsage | None
    timings: Timings
    model: str
    results: list[RerankResult] = Field(default_factory=list, description=(
        "the ranking in rerank-API form, best first, cut to `top_n`"))


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request: ``query`` = prompt + response texts."""

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = Field(default=None, description="the prompt of each query, when the caller sends it")
    labels: list[Any] | None = None  # sent by some OpenRLHF versions; unused


class RewardResponse(BaseModel):
    rewards: list[float]
