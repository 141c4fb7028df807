"""The wire contract of the HTTP API (DESIGN §5). Pydantic only; ``clients/`` imports it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.aggregate import Aggregation
from service.steps import Language, StepKind

Text = Annotated[str, Field(min_length=1)]


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

    @model_validator(mode="after")
    def _code_or_steps(self) -> ScoreItem:
        if (self.code is None) == (self.steps is None):
            raise ValueError("give exactly one of 'code' or 'steps'")
        return self


class ScoreBatchRequest(_Request):
    items: list[ScoreItem] = Field(min_length=1)
    aggregation: Aggregation | None = Field(default=None, description="applies to items that set none")


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
    id: str
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
