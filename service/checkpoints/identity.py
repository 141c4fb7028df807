"""What the service says about a foreign checkpoint, from its small files only: the manifest it shows
(``/v1/models``), the revision that keys the score cache, and the input template of a token classifier.

Pure: stdlib and ``service`` only (no torch), so the vLLM engine (``service.serving.vllm_scorer``) describes a
checkpoint exactly as the torch scorers (``service.checkpoints.load``) do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from service.checkpoints import templates as tpl
from service.checkpoints.detect import Detected
from service.checkpoints.manifest import BaseModelSpec, HeadSpec, PRMManifest, checkpoint_sha256
from service.encoding import STEP_SEPARATOR, TEMPLATE_ID, Encoded, encode_steps
from service.errors import InvalidInput

Encoder = Callable[[str, Sequence[str], int], Encoded]  # (problem, steps, token limit) -> model input


def foreign_manifest(found: Detected, config: dict[str, Any], *, dtype: str, aggregation: str = "min") -> PRMManifest:
    """The manifest of a checkpoint that has none of ours, from its model ``config`` (config.json's fields)."""
    hidden = int(config.get("hidden_size") or 1)
    positions = int(config.get("max_position_embeddings") or 0) or 32768
    base_id = str(found.base) if found.base is not None else str(config.get("_name_or_path") or "")
    return PRMManifest(name=found.path.name,
                       base_model=BaseModelSpec(id=base_id or found.path.name), head=HeadSpec(in_features=hidden),
                       dtype=dtype, default_aggregation=aggregation,  # type: ignore[arg-type]
                       max_tokens=min(positions, 32768), training={"format": found.format})


def revision(found: Detected, options: dict[str, Any]) -> str:
    """The cache's model identity: the checkpoint's files, its base's, and the options that change the input."""
    digest = hashlib.sha256(checkpoint_sha256(found.path).encode())
    if found.base is not None:
        digest.update(checkpoint_sha256(found.base).encode())
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def token_classification_template(found: Detected, tokenizer: Any,
                                  step_separator: str | None) -> tuple[str, str, Encoder]:
    """(template id, step separator, encoder) of a token classifier: our export's template (``prm_template.json``
    names ``dreamprm-cof-v1``) or TRL's (separator: ``step_separator``, else the sidecar's, else ``"\\n"``).

    Raises:
        InvalidInput: the sidecar names a template we do not know.
    """
    template = str(found.sidecar.get("template", "trl"))
    if template == TEMPLATE_ID:  # our export: our template and separator token
        separator = str(found.sidecar.get("step_separator", STEP_SEPARATOR))

        def ours(problem: str, steps: Sequence[str], limit: int) -> Encoded:
            return encode_steps(tokenizer, problem, steps, limit, separator=separator)
        return TEMPLATE_ID, separator, ours
    if template == "trl":
        trl_separator = step_separator or str(found.sidecar.get("step_separator", "\n"))

        def trl(problem: str, steps: Sequence[str], limit: int) -> Encoded:
            return tpl.encode_trl(tokenizer, problem, steps, limit, separator=trl_separator)
        return tpl.TRL_TEMPLATE, trl_separator, trl
    raise InvalidInput(f"{found.path}: prm_template.json names template {template!r}; known: trl, {TEMPLATE_ID}")
