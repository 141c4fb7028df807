"""The checkpoint manifest ``prm.json`` (DESIGN §4): reading, validating, writing. Pydantic only."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.aggregate import Aggregation
from service.encoding import STEP_SEPARATOR
from service.errors import InvalidInput

MANIFEST = "prm.json"
HEAD_FILE = "head.safetensors"
ADAPTER_FILE = "adapter.safetensors"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"


class BaseModelSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    revision: str | None = None
    sha256: str | None = None


class AdapterSpec(BaseModel):
    """``weights: "adapter"``: the checkpoint holds only what training changed. Each of ``modules``
    (Linear layers of the base model, by name) gets ``W += B @ A`` (``B`` pre-scaled, rank ``rank``);
    ``added_tokens`` are added to the base tokenizer in order and take ids ``first_added_id``, … with
    their trained embedding rows. The base weights come from ``base_model`` (hash-checked)."""

    model_config = ConfigDict(extra="ignore")
    rank: int = Field(gt=0)
    modules: list[str]
    added_tokens: list[str]
    first_added_id: int = Field(ge=0)


class Probe(BaseModel):
    """A fixed input and the step logits the trainer computed for it in fp32 at export: a reload that does not
    reproduce them (another base, a broken merge) is caught by comparing."""

    model_config = ConfigDict(extra="ignore")
    problem: str
    steps: list[str]
    logits: list[float]


class HeadSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    in_features: int = Field(gt=0)
    out_features: Literal[1] = 1
    bias: bool = True


class PRMManifest(BaseModel):
    """What ``prm.json`` holds. Unknown keys are ignored; a newer format version is refused."""

    model_config = ConfigDict(extra="ignore")
    format_version: Literal[1] = 1
    name: str
    template: Literal["dreamprm-cof-v1"] = "dreamprm-cof-v1"
    separator_token: str = STEP_SEPARATOR
    base_model: BaseModelSpec
    weights: Literal["full", "adapter"] = "full"
    adapter: AdapterSpec | None = None
    head: HeadSpec
    dtype: str = "float32"
    default_aggregation: Aggregation = "min"
    max_tokens: int = Field(default=2048, gt=0)
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    probe: Probe | None = None

    @model_validator(mode="after")
    def _adapter_complete(self) -> PRMManifest:
        if self.weights == "adapter" and (self.adapter is None or self.base_model.sha256 is None):
            raise ValueError("weights 'adapter' needs an 'adapter' section and base_model.sha256")
        return self


def read_manifest(checkpoint: Path) -> PRMManifest:
    path = checkpoint / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{checkpoint} is not a PRM checkpoint: {MANIFEST} is missing")
    try:
        return PRMManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InvalidInput(f"{path} is invalid: {exc}") from exc


def write_manifest(checkpoint: Path, manifest: PRMManifest) -> None:
    (checkpoint / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")


@contextmanager
def atomic_checkpoint_dir(out: Path) -> Iterator[Path]:
    """A temp directory beside ``out`` to write a checkpoint into; on success it becomes ``out`` (replacing
    it) with 0755/0644 modes — the service's own non-root user must read it, whatever umask or temp-file modes
    the writers used (safetensors writes 0600); on failure it is removed and ``out`` is untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(checkpoint: Path) -> str:
    """Hash of every file in the checkpoint (names and bytes), the cache's model identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        if path.name == "MODEL_CARD.md" or path.suffix == ".png":  # documentation, not the model
            continue
        digest.update(path.relative_to(checkpoint).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
