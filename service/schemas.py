"""The wire contract of the HTTP API (DESIGN §5). Pydantic only; ``clients/`` imports it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.aggregate import Aggregation
from service.steps import MODULE_KINDS, Language, StepKind, carries_logic

Text = Annotated[str, Field(min_length=1)]
ModelName = Annotated[str | None, Field(max_length=256, description=(
    "the PRM to use, as GET /v1/models lists it (OpenAI-style clients always send one); default: the served "
    "one; an unknown name is a 404"))]


def _given(*names: str) -> dict[str, Any]:
    """JSON Schema for "each of ``names`` is present and not null" (the server treats null as absent)."""
    return {"required": list(names), "properties": {n: {"not": {"type": "null"}} for n in names}}


class _Request(BaseModel):
    # strict: no coercion (false is not 0, "5" is not 5); every text field is also checked for NUL and
    # lone surrogates before validation (service.http.json_guard)
    model_config = ConfigDict(extra="forbid", strict=True)


class StepOut(BaseModel):
    # one ``service.steps.Step`` on the wire and in the trainer's candidate records (``StepOut.model_validate(step)``)
    model_config = ConfigDict(from_attributes=True)

    index: int
    kind: StepKind
    name: str
    start_line: int
    end_line: int
    start_byte: int
    end_byte: int
    text: str
    context: bool = Field(description="module-level code without logic of its own: scored, but left out of the "
                                      "aggregates")

    @model_validator(mode="before")
    @classmethod
    def _context_of_older_records(cls, data: Any) -> Any:
        """Candidate records written before ``context`` existed get it from the splitter's own rule."""
        if isinstance(data, dict) and "context" not in data:
            data = {**data, "context": data.get("kind") in MODULE_KINDS and not carries_logic(data.get("text", ""))}
        return data


class SplitRequest(_Request):
    code: Text = Field(description="program source")
    language: Language = "python"


class SplitResponse(BaseModel):
    steps: list[StepOut]
    parsed: bool = Field(description="false when the tolerant fallback splitter was used")
    language: Language


class ScoreItem(_Request):
    """One candidate: give ``code`` (split by the service) or ready-made ``steps``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [_given("code"), _given("steps")]})

    problem: str = Field(max_length=1 << 20, description="problem statement")
    code: Text | None = None
    steps: list[Text] | None = Field(default=None, min_length=1,
                                     description="step texts; they are concatenated as the program")
    language: Language = "python"
    aggregation: Aggregation | None = Field(default=None, description="default: the checkpoint's")
    prefix_scores: bool = Field(default=False, description="outcome reward models only: score every prefix of "
                                "the program as its own sequence (one score per step); by default an ORM scores "
                                "the whole program once. Process reward models always score every step.")
    run_examples: bool = Field(default=False, description="also run the examples found in the statement in the "
                                                          "sandbox and report {passed, total}; 'score' is unchanged")
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
    context: bool = Field(description="module-level code without logic of its own: left out of the aggregate")
    score: float | None = Field(description="P(still on a correct path); null if not scored (too long)")
    logit: float | None


class AggregateScores(BaseModel):
    min: float
    mean: float
    last: float
    product: float
    logodds: float


class ExamplesPassed(BaseModel):
    passed: int
    total: int = Field(description="examples extracted from the statement (0: none found)")
    status: str | None = Field(default=None, description="the sandbox's status; null when there was nothing to run")


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
    examples: ExamplesPassed | None = Field(default=None, description="with run_examples only")


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
    format: str = Field(description="checkpoint format: dreamprm | token-classification | qwen2.5-math-prm | "
                                    "dreamprm-code-authors | orm")
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
    sandbox: str | None = Field(default=None, description="the sandbox's isolation: full | namespaces | none | "
                                "unavailable (null while it is being probed)")


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PublicTest(_Request):
    """A test the caller can show us: stdin ``input`` + expected ``output``, or Python ``code`` (asserts)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [_given("output"), _given("code")]})

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

    model_config = ConfigDict(json_schema_extra={
        "not": _given("candidates", "n"),  # one or neither (then the server's default n)
        "anyOf": [{"properties": {"public_tests": {"items": _given("output")}}},  # all stdin tests,
                  {"properties": {"public_tests": {"items": _given("code")}}}],  # or all assert tests
    })

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
    all_test_results: bool = Field(default=False, description="run every public test of a candidate (default: "
                                   "stop at its first failure; n_passed then counts the tests before it)")
    sandbox_budget_s: float | None = Field(default=None, gt=0, description="sandbox seconds for this request's "
                                           "tests (default and maximum: the server's DREAMPRM_SANDBOX_BUDGET_S)")
    examples: Literal["auto", "off"] = Field(default="auto", description="without public_tests: 'auto' extracts "
                                             "the statement's worked examples and runs them as tests")
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


class TestCaseInfo(BaseModel):
    """One test that was run, and where it came from."""

    __test__ = False  # not a pytest class
    source: Literal["given", "statement"]
    example: str | None = Field(default=None, description="the statement text the test was read from")
    input: str | None = None
    output: str | None = None
    code: str | None = None


class TestOutcome(BaseModel):
    __test__ = False  # not a pytest class
    passed: bool
    n_tests: int
    n_passed: int
    status: str = Field(description="passed | wrong_answer | runtime_error | timeout | memory | output_limit | "
                        "syntax_error | killed | sandbox_error | budget_exceeded")
    first_failure: str | None = Field(default=None, description="e.g. 'test 2: AssertionError'")
    seconds: float | None = Field(default=None, description="sandbox time of this candidate's tests")
    cases: list[TestCaseInfo] = Field(default_factory=list, description="the tests, in order")


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


class ExamplesInfo(BaseModel):
    """What was read from the statement (``examples: "auto"`` without public tests)."""

    test_type: Literal["functional", "stdin"]
    entry_point: str | None
    extracted: int
    skipped: int = Field(description="example-like blocks that could not be read with confidence")
    truncated: bool


class Timings(BaseModel):
    examples_ms: float = Field(default=0.0, description="extracting examples from the statement")
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
    tests_source: Literal["given", "statement"] | None = Field(
        default=None, description="where the tests came from; null when none ran")
    examples: ExamplesInfo | None = Field(default=None, description="the extraction, when examples were looked for")
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
