"""The vLLM scoring engine (``DREAMPRM_ENGINE=vllm``): the forward pass runs in a vLLM pooling server, the
rest (splitting, the template, truncation, aggregation, caching, rerank) stays ours (DESIGN §6).

The server serves a ``*ForTokenClassification`` directory (``python -m trainer export CKPT OUT --format hf``
writes ours) with the ``token_classify`` task; this scorer reads the same directory's tokenizer and
``prm_template.json``, so inputs and truncation are those of the torch engine (``service.checkpoints.identity``)
and the cache key (the revision) is the same. Step pooling at the separator (``tok_pooling_type: STEP``,
``step_tag_id``: the separator's id) returns two numbers per step; ``ALL`` pooling (two per token) works too.
Raw logits are asked for (``use_activation: false``): a step's logit is label 1's minus label 0's, exactly the
torch engine's ``LogitHead``.

No torch: the tokenizer is the ``tokenizers`` library's, on the directory's ``tokenizer.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from tokenizers import Tokenizer

from service.checkpoints.detect import Detected, detect_format, num_labels, read_json
from service.checkpoints.identity import foreign_manifest, revision, token_classification_template
from service.encoding import Encoded
from service.errors import EngineError, InvalidInput, ModelNotReady

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0  # what a caller is told to wait when the engine is unreachable
HEALTH_TIMEOUT_S = 3.0


class FileTokenizer:
    """A Hugging Face fast tokenizer's ``tokenizer.json`` (+ ``tokenizer_config.json`` for its BOS), with the
    methods the templates use (``service.encoding.Tokenizer``, ``service.checkpoints.templates.TextTokenizer``)."""

    def __init__(self, path: Path) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own Exception type for a bad file
            raise InvalidInput(f"{path / 'tokenizer.json'} cannot be read: {exc}") from exc
        config = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
        bos = config.get("bos_token")
        bos = bos.get("content") if isinstance(bos, dict) else bos
        self.bos_token_id: int | None = self._tok.token_to_id(bos) if isinstance(bos, str) else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=False))


def servable(checkpoint: Path) -> Detected:
    """``checkpoint`` when the vllm engine can serve it: a ``*ForTokenClassification`` directory.

    Raises:
        InvalidInput: another format (the message says how to export one).
    """
    found = detect_format(checkpoint)
    if found.format != "token-classification" or found.adapter is not None:
        raise InvalidInput(f"the vllm engine serves a *ForTokenClassification directory; {checkpoint} is a "
                           f"{found.format} checkpoint{' adapter' if found.adapter else ''}: write one with "
                           "`python -m trainer export CHECKPOINT OUT --format hf` and serve OUT on both sides")
    return found


class VLLMScorer:
    """``ScoreModel`` on a vLLM pooling server at ``url`` (``ScoringEngine`` batches for it; ``max_in_flight``
    batches go to the server at once, its continuous batching does the rest)."""

    format = "token-classification"

    def __init__(self, checkpoint: Path, *, url: str, served_model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60.0, in_flight: int = 4, step_separator: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``transport``: tests talk to a fake server through it."""
        found = servable(checkpoint)
        self.tokenizer = FileTokenizer(checkpoint)
        self.template, separator, self._encoder = token_classification_template(found, self.tokenizer,
                                                                                step_separator)
        sep_ids = self.tokenizer.encode(separator)
        self.separator_id = sep_ids[0] if len(sep_ids) == 1 else None  # step pooling reads one token per step
        self.n_labels = num_labels(found.config)
        self.manifest = foreign_manifest(found, found.config, dtype=str(found.config.get("torch_dtype") or
                                                                        found.config.get("dtype") or "float32"))
        self.revision = revision(found, {"template": self.template, "separator": separator})
        self.name = self.manifest.name
        self.max_tokens = self.manifest.max_tokens
        self.max_in_flight = in_flight
        self.url = url.rstrip("/")
        self.served_model = served_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers,
                                    timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
                                    limits=httpx.Limits(max_connections=in_flight + 2), transport=transport)

    # --- the engine's connection ----------------------------------------------------------------

    def connect(self) -> None:
        """Ask the server what it serves: the model (``served_model``, else its first) and its context length,
        which caps ``max_tokens``.

        Raises:
            ModelNotReady: the server is unreachable, still loading, or does not serve ``served_model``.
        """
        body = self._call("GET", "/v1/models")
        models = {str(m.get("id")): m for m in body.get("data") or [] if isinstance(m, dict)}
        if not models:
            raise ModelNotReady(f"the scoring engine at {self.url} serves no model yet", retry_after=RETRY_AFTER_S)
        name = self.served_model or next(iter(models))
        if name not in models:
            raise ModelNotReady(f"the scoring engine at {self.url} serves {sorted(models)}, not {name!r}",
                                retry_after=RETRY_AFTER_S)
        self.served_model = name
        limit = models[name].get("max_model_len")
        if isinstance(limit, int) and limit > 0:
            self.max_tokens = min(self.max_tokens, limit)
            self.manifest = self.manifest.model_copy(update={"max_tokens": self.max_tokens})
        logger.info("scoring engine: %s at %s (max %d tokens)", name, self.url, self.max_tokens)

    def check(self) -> str | None:
        """Why the engine cannot score now (unreachable, unhealthy), or None when it can."""
        try:
            response = self._client.get("/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"the scoring engine at {self.url} is unreachable ({type(exc).__name__})"
        if response.status_code != 200:
            return f"the scoring engine at {self.url} is unhealthy (HTTP {response.status_code})"
        return None

    def close(self) -> None:
        self._client.close()

    # --- ScoreModel ---------------------------------------------------------------------------

    def encode(self, problem: str, steps: Sequence[str], max_tokens: int | None = None) -> Encoded:
        return self._encoder(problem, steps, min(max_tokens or self.max_tokens, self.max_tokens))

    def forward(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """Step logits of every item: one ``/pooling`` request for the batch.

        Raises:
            ModelNotReady: the engine is unreachable or failing (503 + Retry-After to the caller).
            EngineError: the engine answered something we cannot read (502).
        """
        if not batch:
            return []
        body = self._call("POST", "/pooling", {"model": self.served_model, "input": [e.input_ids for e in batch],
                                               "task": "token_classify", "use_activation": False})
        return [self.step_logits(enc, rows) for enc, rows in zip(batch, pooled_rows(body, len(batch)), strict=True)]

    def warm_up(self) -> None:
        self.forward([self.encode("Print the sum of two integers.", ["def main():\n    pass\n"])])

    def step_logits(self, enc: Encoded, rows: list[list[float]]) -> list[float]:
        """The pooled rows of one item (one per token, or one per separator token) read at its steps' positions.

        Raises:
            EngineError: rows of another width or count than the task and pooling we serve with give.
        """
        if not all(len(r) == self.n_labels for r in rows):
            raise EngineError(f"the scoring engine returned no {self.n_labels}-label rows: is it serving the "
                              "token_classify task?")
        if len(rows) == enc.n_tokens:  # ALL pooling
            picked = [rows[p] for p in enc.step_end_positions]
        else:  # STEP pooling: one row per separator token, wherever it occurs (the problem may hold one too)
            at = [i for i, t in enumerate(enc.input_ids) if t == self.separator_id]
            if self.separator_id is None or len(rows) != len(at):
                raise EngineError(f"the scoring engine returned {len(rows)} rows for {enc.n_tokens} tokens: serve "
                                  "with tok_pooling_type STEP and step_tag_id "
                                  f"{self.separator_id} (or ALL)")
            row_of = {p: k for k, p in enumerate(at)}
            picked = [rows[row_of[p]] for p in enc.step_end_positions]
        if self.n_labels == 2:
            return [r[1] - r[0] for r in picked]
        return [r[0] for r in picked]

    # --- helpers ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise ModelNotReady(f"the scoring engine at {self.url} did not answer in time ({type(exc).__name__})",
                                retry_after=RETRY_AFTER_S) from exc
        except httpx.HTTPError as exc:
            raise ModelNotReady(f"the scoring engine at {self.url} is unreachable ({type(exc).__name__}: {exc})",
                                retry_after=RETRY_AFTER_S) from exc
        if response.status_code >= 500 or response.status_code in (404, 408, 429):
            raise ModelNotReady(f"the scoring engine at {self.url} answered HTTP {response.status_code}: "
                                f"{response.text[:200]}", retry_after=RETRY_AFTER_S)
        if response.status_code != 200:
            raise EngineError(f"the scoring engine refused the request (HTTP {response.status_code}): "
                              f"{response.text[:300]}")
        try:
            value = response.json()
        except ValueError as exc:
            raise EngineError(f"the scoring engine answered non-JSON: {response.text[:200]!r}") from exc
        if not isinstance(value, dict):
            raise EngineError("the scoring engine answered JSON that is not an object")
        return value


def pooled_rows(body: dict[str, Any], n: int) -> list[list[list[float]]]:
    """The rows of each of the ``n`` inputs of a ``/pooling`` answer (``data[i].data``), in input order.

    Raises:
        EngineError: not ``n`` results, or a result that is not a list of rows of numbers.
    """
    data = body.get("data")
    if not isinstance(data, list) or len(data) != n:
        raise EngineError(f"the scoring engine returned {len(data) if isinstance(data, list) else 'no'} results "
                          f"for {n} inputs")
    out: list[list[list[float]] | None] = [None] * n
    for k, d in enumerate(data):
        index = d.get("index", k) if isinstance(d, dict) else None
        rows = d.get("data") if isinstance(d, dict) else None
        if not (isinstance(index, int) and 0 <= index < n and out[index] is None and isinstance(rows, list)
                and all(isinstance(r, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    for x in r) for r in rows)):
            raise EngineError(f"the scoring engine's result {k} is not an indexed list of rows of numbers")
        out[index] = [[float(x) for x in r] for r in rows]
    return [rows for rows in out if rows is not None]
