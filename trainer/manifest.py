"""A stage's manifest (``run.json``: config, inputs, code version, host, counts, peak RSS) and its resume
rules (a changed setting stops a resume unless it is resume-safe or allowed), plus progress bars."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from service.checkpoints.manifest import file_sha256
from trainer.config import config_to_dict, resume_safe_fields
from trainer.store import StrPath, atomic_write_text

logger = logging.getLogger(__name__)


V = TypeVar("V")


Status = Literal["running", "done", "failed"]


MANIFEST_FILE = "run.json"


# set by ``python -m trainer STAGE ... --allow-changed``: resume even though a setting changed
ALLOW_CONFIG_CHANGE: ContextVar[bool] = ContextVar("allow_config_change", default=False)


@functools.cache
def code_version() -> str:
    """``git describe --always --dirty`` of this checkout, else the installed package version."""
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=repo, capture_output=True,
                                 text=True, timeout=10, check=True)
            return f"git:{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("git describe failed: %s", exc)
    try:
        return f"dreamprm-code=={importlib.metadata.version('dreamprm-code')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class InputFile(BaseModel):
    path: str
    sha256: str
    bytes: int


class HostInfo(BaseModel):
    hostname: str
    platform: str
    python: str
    pid: int
    cpus: int | None

    @classmethod
    def current(cls) -> HostInfo:
        return cls(hostname=socket.gethostname(), platform=platform.platform(), python=platform.python_version(),
                   pid=os.getpid(), cpus=os.cpu_count())


class RunAttempt(BaseModel):
    """One attempt at a stage: what ran, on what, where, and how it ended."""

    started_at: datetime
    finished_at: datetime | None = None
    status: Status = "running"
    error: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    config: dict[str, Any]
    inputs: list[InputFile] = Field(default_factory=list)
    code_version: str
    host: HostInfo
    peak_rss_mb: float | None = None  # the process's peak resident memory when the attempt ended (or was saved)


class RunManifest(RunAttempt):
    """``run.json`` next to a stage's outputs: the current attempt, plus earlier ones in ``history`` (oldest first)."""

    stage: str
    history: list[RunAttempt] = Field(default_factory=list)

    @classmethod
    def read(cls, out_dir: StrPath) -> RunManifest | None:
        path = Path(out_dir) / MANIFEST_FILE
        return cls.model_validate_json(path.read_bytes()) if path.is_file() else None

    def write(self, out_dir: StrPath) -> None:
        atomic_write_text(Path(out_dir) / MANIFEST_FILE, self.model_dump_json(indent=2) + "\n")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class ConfigChangedError(ValueError):
    """A stage resumed with a config that changes its outputs."""


class StageRun:
    """The running attempt of a stage (what ``stage`` yields): counts and manifest checkpoints."""

    def __init__(self, out_dir: Path, manifest: RunManifest) -> None:
        self.out_dir = out_dir
        self.manifest = manifest

    def count(self, name: str, n: int = 1) -> None:
        self.manifest.counts[name] = self.manifest.counts.get(name, 0) + n

    def save(self) -> None:
        self.manifest.peak_rss_mb = peak_rss_mb()
        self.manifest.write(self.out_dir)

    def finish(self, status: Status, error: str | None = None) -> None:
        self.manifest.status, self.manifest.error = status, error
        self.manifest.finished_at = datetime.now(UTC)
        self.save()


def start_run(out_dir: StrPath, name: str, config: object, inputs: Sequence[StrPath] = (), *,
              allow_config_change: bool = False) -> StageRun:
    """Write ``run.json`` for a new attempt (status running), moving an earlier attempt into its history.

    Raises:
        ConfigChangedError: resuming with a config that differs in a field not marked ``resume_safe``
            (unless ``allow_config_change``). Changed inputs are only logged: a resumed upstream grows them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [InputFile(path=str(Path(p).resolve()), sha256=file_sha256(p), bytes=Path(p).stat().st_size)
             for p in inputs]
    attempt = RunAttempt(started_at=datetime.now(UTC), config=config_to_dict(config), inputs=files,
                         code_version=code_version(), host=HostInfo.current())
    history: list[RunAttempt] = []
    if (previous := RunManifest.read(out)) is not None:
        _check_resume(out, name, previous, attempt, resume_safe_fields(config),
                      allow_config_change or ALLOW_CONFIG_CHANGE.get(), _defaults(config))
        last = RunAttempt.model_validate(previous.model_dump(exclude={"stage", "history"}))
        if last.status == "running":  # killed: it never recorded its end
            last.status, last.error = "failed", "did not finish (killed, or still running elsewhere)"
            logger.warning("%s: the last attempt of stage %s did not finish; resuming", out, name)
        history = [*previous.history, last]
    run = StageRun(out, RunManifest(stage=name, history=history, **attempt.model_dump()))
    run.save()
    return run


def _check_resume(out: Path, name: str, previous: RunManifest, attempt: RunAttempt, safe: frozenset[str],
                  allow_config_change: bool, defaults: dict[str, Any]) -> None:
    if previous.stage != name:
        raise ValueError(f"{out} holds the outputs of stage {previous.stage!r}, not {name!r}")
    # a field the earlier attempt's code did not have yet ran as its default
    old = {**{k: v for k, v in defaults.items() if k not in _flatten(previous.config)}, **_flatten(previous.config)}
    new = _flatten(attempt.config)
    changed = sorted(k for k in (old.keys() | new.keys()) - safe if old.get(k) != new.get(k))
    detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    if changed and not allow_config_change:
        raise ConfigChangedError(f"{out}: resuming stage {name!r} with a different config ({detail}); "
                                 "pass --allow-changed to accept it (records already written keep the old "
                                 "setting), or use a new run directory")
    if changed:
        logger.warning("%s: stage %s resumes with a changed config (allowed): %s", out, name, detail)
    if sorted(f.sha256 for f in previous.inputs) != sorted(f.sha256 for f in attempt.inputs):
        logger.warning("%s: the inputs of stage %s changed since the last attempt", out, name)
    logger.info("%s: resuming stage %s (attempt %d; the last one ended %s)", out, name,
                len(previous.history) + 2, previous.status)


def _defaults(config: object, prefix: str = "") -> dict[str, Any]:
    """Flattened defaults of a config's fields (as ``config_to_dict`` writes them); fields without one are left out."""
    if isinstance(config, Mapping):
        return {k: v for key, sub in config.items() for k, v in _defaults(sub, f"{prefix}{key}.").items()}
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            value: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f"{prefix}{f.name}"] = list(value) if isinstance(value, tuple) else value
    return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@contextmanager
def stage(out_dir: StrPath, name: str, config: object, inputs: Sequence[StrPath] = (), *,
          allow_config_change: bool = False) -> Iterator[StageRun]:
    """Run a stage's body between ``run.json`` marked running and marked done (or failed, re-raising)."""
    run = start_run(out_dir, name, config, inputs, allow_config_change=allow_config_change)
    try:
        yield run
    except BaseException as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    run.finish("done")


def progress(iterable: Iterable[V], total: int | None = None, desc: str = "", *, force: bool = False,
             log_every_s: float = 60.0) -> Iterator[V]:
    """A tqdm progress bar on stderr when stderr is a TTY (or ``force``); otherwise (logs, CI, ``nohup``) a log
    line at most every ``log_every_s`` seconds with the count, the rate and the time left."""
    if force or sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return iter(tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True))
    return _logged(iterable, total, desc, log_every_s)


def _logged(iterable: Iterable[V], total: int | None, desc: str, every_s: float) -> Iterator[V]:
    started = last = time.monotonic()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last, rate = now, done / (now - started)
            left = f", {(total - done) / rate / 60:.1f} min left" if total else ""
            logger.info("%s: %d%s done, %.2f/s%s", desc or "progress", done, f"/{total}" if total else "", rate, left)


def stage_seconds(stage_dir: StrPath) -> float | None:
    """Wall time of a stage, summed over the attempts that recorded their end (a killed attempt did not and
    is left out), from its ``run.json``; None if the stage never ran."""
    path = Path(stage_dir) / "run.json"
    if not path.is_file():
        return None
    manifest = RunManifest.model_validate_json(path.read_text())
    return sum((a.finished_at - a.started_at).total_seconds()
               for a in [*manifest.history, manifest] if a.finished_at is not None)


def untimed_attempts(stage_dir: StrPath) -> int:
    """Attempts of a stage that ``stage_seconds`` cannot count: killed before they recorded their end."""
    manifest = RunManifest.read(Path(stage_dir))
    return 0 if manifest is None else sum(1 for a in [*manifest.history, manifest] if a.finished_at is None)
