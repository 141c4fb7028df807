"""The ``dreamprm`` command: ``serve``; ``split``, ``score`` (local on a checkpoint, or against a server);
``rerank`` and ``ci-rerank`` (against a server)."""

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

ServerOpt = Annotated[str | None, typer.Option("--server", "-s", envvar="DREAMPRM_URL",
                                               help="URL of a running service [env: DREAMPRM_URL]")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="DREAMPRM_API_KEY", help="Bearer key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
ExamplesOpt = Annotated[str, typer.Option("--examples", help="auto: without --tests, run the statement's worked "
                                                             "examples as tests; off: never")]
EntryPointOpt = Annotated[str | None, typer.Option("--entry-point", help="function the examples call")]
StarterOpt = Annotated[Path | None, typer.Option("--starter-code", help="file with the signature / class stub",
                                                 exists=True, dir_okay=False)]
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
    from service.app import create_app
    from service.checkpoints.detect import detect_format
    from service.http_server import serve as serve_http
    from service.logs import configure_logging
    from service.manifest import read_manifest

    overrides: dict[str, Any] = {k: v for k, v in
                                 {"checkpoint": checkpoint, "host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)
    settings.checkpoint = settings.checkpoint_or_default()
    if settings.checkpoint is None:
        _fail("no checkpoint: pass --checkpoint DIR or set DREAMPRM_CHECKPOINT (the default checkpoint, "
              "checkpoints/dreamprm-code-smollm2, is only found in a checkout of the repository)")
    try:  # fail before binding the port, not in the background
        found = detect_format(settings.checkpoint, base=settings.base_model)
        manifest = read_manifest(settings.checkpoint) if found.format == "dreamprm" else None
        if manifest is not None and manifest.weights == "adapter":
            from service.model import resolve_base

            resolve_base(manifest, settings.base_model, where=settings.checkpoint)  # found, and the right hash
    except PRMError as exc:
        _fail(exc.message)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    serve_http(create_app(settings), settings)


@app.command()
def convert(source: Annotated[Path, typer.Argument(help="the authors' torch checkpoint (.pt), or a directory "
                                                        "holding one", exists=True)],
            out: Annotated[Path, typer.Argument(help="directory to write (safetensors + JSON)")],
            base: Annotated[str, typer.Option(help="their base model: a local Hugging Face directory (or a hub "
                                                   "id, resolved at serve time by DREAMPRM_BASE_MODEL)")],
            lora_alpha: Annotated[float, typer.Option(help="the LoRA alpha they trained with (not in the file)")]
            = 16.0,
            overwrite: Annotated[bool, typer.Option(help="replace OUT if it exists")] = False) -> None:
    """Convert the DreamPRM-Code authors' pickled checkpoint (LoRA + reward head) into a directory the server
    loads: peft adapter + reward_head.safetensors. Read with torch.load(weights_only=True): tensors only."""
    from service.checkpoints.convert import convert_authors

    try:
        written = convert_authors(source, out, base=base, lora_alpha=lora_alpha, overwrite=overwrite)
    except PRMError as exc:
        _fail(exc.message)
    except FileExistsError:
        _fail(f"{out} exists: pass --overwrite to replace it")
    typer.echo(f"wrote {written}: serve it with  dreamprm serve --checkpoint {written}")


@app.command()
def split(file: Annotated[Path, typer.Argument(help="source file, or - for stdin")],
          language: Annotated[str, typer.Option("--language", "-l")] = "python",
          server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Split a program into function steps (locally, or by the server at --server)."""
    from service.schemas import SplitRequest, SplitResponse, StepOut
    from service.steps import split_code

    code = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        request = SplitRequest.model_validate({"code": code, "language": language})
        if server:
            with _client(server, api_key) as prm:
                result = prm.split(request.code, request.language)
        else:
            local = split_code(code, request.language)
            result = SplitResponse(steps=[StepOut(**dataclasses.asdict(s)) for s in local.steps],
                                   parsed=local.parsed, language=request.language)
    except PRMError as exc:
        _fail(exc.message)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
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
          server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Score a program: against the server at --server, or locally with a checkpoint."""
    from service.schemas import ScoreItem

    code = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        item = ScoreItem.model_validate({"problem": _read_arg(problem), "code": code, "language": language,
                                         "aggregation": aggregation})
        if server and not checkpoint:
            with _client(server, api_key) as prm:
                result = prm.score(item.problem, item.code, language=item.language, aggregation=item.aggregation)
        else:
            settings = Settings(checkpoint=checkpoint) if checkpoint else Settings()
            settings.checkpoint = settings.checkpoint_or_default()
            if settings.checkpoint is None:
                _fail("nothing to score with: pass --server URL or --checkpoint DIR")
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


@app.command()
def rerank(candidates: Annotated[list[Path] | None, typer.Argument(help="candidate files (none: generate --n)",
                                                                  exists=True, dir_okay=False)] = None,
           problem: Annotated[str, typer.Option("--problem", "-p", help="TEXT, @file or - for stdin")] = "",
           n: Annotated[int | None, typer.Option(help="candidates to generate with the server's policy")] = None,
           tests: Annotated[Path | None, typer.Option(help="JSON list of public tests: {input, output} or {code}",
                                                      exists=True, dir_okay=False)] = None,
           language: Annotated[str, typer.Option("--language", "-l")] = "python",
           aggregation: Annotated[str | None, typer.Option(help="min|mean|last|product|logodds")] = None,
           examples: ExamplesOpt = "auto", entry_point: EntryPointOpt = None, starter_code: StarterOpt = None,
           server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Rank candidate programs (or n generated ones) with the server at --server."""
    texts = [_read_file(c) for c in candidates or []]
    result = _rerank(server, api_key, _read_arg(problem), texts or None, n=n, tests=tests, language=language,
                     aggregation=aggregation, examples=examples, entry_point=entry_point,
                     starter_code=_read_file(starter_code) if starter_code else None)
    names = [str(c) for c in candidates or []]
    _print_ranking(result, names, as_json)


@app.command("ci-rerank")
def ci_rerank(candidates: Annotated[list[Path], typer.Argument(help="candidate files, or unified diffs of --base",
                                                                exists=True, dir_okay=False)],
              problem: Annotated[Path, typer.Option("--problem", "-p", help="file with the problem statement",
                                                    exists=True, dir_okay=False)],
              base: Annotated[Path | None, typer.Option(help="the file the diffs apply to", exists=True,
                                                        dir_okay=False)] = None,
              threshold: Annotated[float, typer.Option(help="exit 1 unless the best score reaches this")] = 0.5,
              tests: Annotated[Path | None, typer.Option(help="JSON list of public tests", exists=True,
                                                         dir_okay=False)] = None,
              language: Annotated[str, typer.Option("--language", "-l")] = "python",
              aggregation: Annotated[str | None, typer.Option(help="min|mean|last|product|logodds")] = None,
              examples: ExamplesOpt = "auto", entry_point: EntryPointOpt = None, starter_code: StarterOpt = None,
              server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Rank generated patches in CI: prints the ranking; exit 0 if the best candidate reaches --threshold,
    1 if none does, 2 on errors."""
    from clients.patch import PatchError, apply_unified_diff, looks_like_diff

    codes = []
    for path in candidates:
        text = _read_file(path)
        if looks_like_diff(text):
            if base is None:
                _fail(f"{path} is a diff: pass --base FILE (the file it applies to)")
            try:
                text = apply_unified_diff(_read_file(base), text)
            except PatchError as exc:
                _fail(f"{path}: {exc}")
        codes.append(text)
    result = _rerank(server, api_key, _read_file(problem), codes, n=None, tests=tests, language=language,
                     aggregation=aggregation, examples=examples, entry_point=entry_point,
                     starter_code=_read_file(starter_code) if starter_code else None)
    _print_ranking(result, [str(c) for c in candidates], as_json)
    best = result.ranking[0] if result.ranking else None
    passed = best is not None and best.score is not None and best.score >= threshold and best.tests_passed is not False
    if not as_json:
        verdict = "ok" if passed else "no candidate reaches"
        typer.echo(f"{verdict}: best {best.score if best else None} vs threshold {threshold}")
    raise typer.Exit(0 if passed else 1)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")


def _client(server: str, api_key: str | None) -> Any:
    from clients.prm import PRMClient

    return PRMClient(server, api_key=api_key)


def _rerank(server: str | None, api_key: str | None, problem: str, codes: list[str] | None, *, n: int | None,
            tests: Path | None, language: str, aggregation: str | None, examples: str = "auto",
            entry_point: str | None = None, starter_code: str | None = None) -> Any:
    if not server:
        _fail("rerank needs a running service: pass --server URL or set DREAMPRM_URL")
    try:
        public = json.loads(tests.read_text()) if tests else None
        with _client(server, api_key) as prm:
            return prm.rerank(problem, codes, n=n, public_tests=public, language=language, aggregation=aggregation,
                              examples=examples, entry_point=entry_point, starter_code=starter_code)
    except PRMError as exc:
        _fail(exc.message)
    except (ValueError, OSError) as exc:
        _fail(str(exc))


def _print_ranking(result: Any, names: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"{'rank':>4}  {'index':>5}  {'score':>7}  {'tests':<6} candidate")
    for c in result.ranking:
        score = "-" if c.score is None else f"{c.score:.4f}"
        tests = "-" if c.tests is None else f"{c.tests.n_passed}/{c.tests.n_tests}"
        name = names[c.index] if c.index < len(names) else f"{c.source} #{c.index}"
        typer.echo(f"{c.rank:>4}  {c.index:>5}  {score:>7}  {tests:<6} {name}" + (f"  ({c.error})" if c.error else ""))
    t, ex = result.timings, result.examples
    if result.tests_source == "statement" and ex is not None:
        typer.echo(f"tests: {ex.extracted} examples from the statement ({ex.test_type}"
                   + (f", {ex.entry_point}" if ex.entry_point else "") + f"; {ex.skipped} blocks skipped)")
    elif result.tests_source == "given":
        typer.echo("tests: given (--tests)")
    elif ex is not None:
        typer.echo(f"tests: none (no example found in the statement; {ex.skipped} blocks skipped)")
    typer.echo(f"best: {result.best_index}  ({result.aggregation}; examples {t.examples_ms:.0f} ms, generate "
               f"{t.generate_ms:.0f} ms, tests {t.tests_ms:.0f} ms, score {t.score_ms:.0f} ms)")


def main(argv: list[str] | None = None) -> None:
    app(args=argv)
