"""Data records of the trainer pipeline (DESIGN §7a) and their JSON Lines form.

Pydantic models at the file boundary; every stage reads and writes these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.sandbox.records import Status
from service.schemas import StepOut

ErrorKind = Status  # the sandbox's verdict kinds


class TestCase(BaseModel):
    """``assert``: Python code run after the solution; ``io``: stdin and the expected stdout."""

    model_config = ConfigDict(extra="ignore")
    __test__ = False  # not a pytest class
    type: Literal["assert", "io"]
    code: str | None = None
    input: str | None = None
    output: str | None = None


class Problem(BaseModel):
    """A problem with unit tests, in the format of ``../shared/data``."""

    model_config = ConfigDict(extra="ignore")
    id: str
    source: str
    title: str | None = None
    prompt: str
    starter_code: str | None = None
    entry_point: str | None = None
    test_type: Literal["functional", "stdin"]
    public_tests: list[TestCase] = Field(default_factory=list)
    private_tests: list[TestCase] = Field(default_factory=list)
    test_setup_code: str | None = None
    canonical_solution: str | None = None
    difficulty: str | None = None
    release_date: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def all_tests(self) -> list[TestCase]:
        return self.public_tests + self.private_tests


StepRecord = StepOut  # the wire record of a step, stored as it is


class ExecSummary(BaseModel):
    passed: bool
    n_tests: int
    n_passed: int
    error_kind: ErrorKind
    seconds: float


Provenance = Literal["policy", "reference", "mutant", "pool"]


class Candidate(BaseModel):
    problem_id: str
    candidate_id: str
    policy: str
    prompt_template: str
    provenance: Provenance = "policy"
    model: str | None = None  # who wrote a pool candidate (e.g. gpt-4): within-model evaluation groups by it
    method: str | None = None  # its prompting strategy (pool candidates)
    code: str
    parsed: bool = True
    steps: list[StepRecord]
    exec: ExecSummary | None = None


class StepLabel(BaseModel):
    problem_id: str
    candidate_id: str
    step_index: int
    mc_label: float = Field(ge=0.0, le=1.0)
    n_rollouts: int
    n_pass: int
    final: bool


class TRLRow(BaseModel):
    """One row of TRL's stepwise-supervision (PRM) dataset format: ``labels`` are booleans, as ``PRMTrainer``
    reads them (``int(label)``); ``soft_labels`` keeps each step's Monte-Carlo pass rate."""

    prompt: str
    completions: list[str]
    labels: list[bool]
    soft_labels: list[float]


class ProblemScores(BaseModel):
    """One scorer's values for the candidates of one problem (``evaluate``'s resumable score cache):
    candidate id -> step logits (a PRM) or a one-element list (a baseline such as the log-likelihood)."""

    problem_id: str
    scores: dict[str, list[float]]
