"""The ``dreamprm`` command: ``serve``, ``split`` and ``score`` (local, on a checkpoint)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from service.aggregate import Aggregation
from service.errors import PRMError
from service.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="DreamPRM-Code: a process reward model for code, function-as-step.")

CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", "-c",
                                                    help="PRM checkpoint directory [env: DREAMPRM_CHECKPOINT]")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read_arg(value: str) -> str:
    """``@path`` reads a file, ``-`` reads stdin, anything else is the text itself."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        return Path(value[1:]).read_text()
    return value


@app.command()
def serve(checkpoint: CheckpointOpt = None,
          host: Annotated[str | None, typer.Option(help="bind address")] = None,
          port: Annotated[int | None, typer.Option(help="port")] = None) -> None:
    """Serve the HTTP API (settings from DREAMPRM_* variables; options override them)."""
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging
    from service.manifest import read_manifest

    overrides: dict[str, Any] = {k: v for k, v in
                                 {"checkpoint": checkpoint, "host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)
    if settings.checkpoint is None:
        _fail("no checkpoint: pass --checkpoint DIR or set DREAMPRM_CHECKPOINT "
              "(no default checkpoint ships yet)")
    assert settings.checkpoint is not None
    try:
        read_manifest(settings.checkpoint)  # fail before binding the port, not in the background
    except PRMError as exc:
        _fail(exc.message)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1,
                log_config=None, access_log=False, timeout_graceful_shutdown=10)


@app.command()
def split(file: Annotated[Path, typer.Argument(help="source file, or - for stdin")],
          language: Annotated[str, typer.Option("--language", "-l")] = "python",
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Split a program into function steps."""
    from service.steps import split_code

    code = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        result = split_code(code, language)
    except PRMError as exc:
        _fail(exc.message)
    if as_json:
        steps = [dataclasses.asdict(s) for s in result.steps]
        typer.echo(json.dumps({"parsed": result.parsed, "steps": steps}, indent=2))
        return
    typer.echo(f"parsed: {result.parsed}")
    for s in result.steps:
        typer.echo(f"{s.index:>3}  {s.kind:<9} {s.name:<32} lines {s.start_line}-{s.end_line}")


@app.command()
def score(file: Annotated[Path, typer.Argument(help="source file, or - for stdin")],
          problem: Annotated[str, typer.Option("--problem", "-p", help="TEXT, @file or - for stdin")],
          checkpoint: CheckpointOpt = None,
          language: Annotated[str, typer.Option("--language", "-l")] = "python",
          aggregation: Annotated[str | None, typer.Option(help="min|mean|last|product|logodds")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Score a program locally with a checkpoint (no server needed)."""
    from service.schemas import ScoreItem

    settings = Settings(checkpoint=checkpoint) if checkpoint else Settings()
    if settings.checkpoint is None:
        _fail("no checkpoint: pass --checkpoint DIR or set DREAMPRM_CHECKPOINT")
    code = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        item = ScoreItem.model_validate({"problem": _read_arg(problem), "code": code, "language": language,
                                         "aggregation": aggregation})
        result = asyncio.run(_score_local(settings, item))
    except PRMError as exc:
        _fail(exc.message)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for s in result.steps:
        shown = "unscored" if s.score is None else f"{s.score:.4f}"
        typer.echo(f"{s.index:>3}  {s.kind:<9} {s.name:<32} {shown}")
    agg: Aggregation = result.aggregation
    typer.echo(f"score ({agg}): {result.score:.4f}" + ("  [truncated]" if result.truncated else ""))


async def _score_local(settings: Settings, item: Any) -> Any:
    from service.engine import ScoringEngine

    engine = await ScoringEngine.start(settings)
    try:
        return await engine.score_item(item)
    finally:
        await engine.aclose()


def main(argv: list[str] | None = None) -> None:
    app(args=argv)
