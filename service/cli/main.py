"""The ``dreamprm`` command: ``serve``; ``split``, ``score`` (local on a checkpoint, or against a server);
``rerank`` and ``ci-rerank`` (against a server). Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from service.aggregate import AGGREGATIONS
from service.cli.console import choice, ci_verdict, fail, need_service_extra, read_arg, read_text, run_app, waiting
from service.errors import PRMError, validation_failed
from service.steps import Language

if TYPE_CHECKING:
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
                                                 dir_okay=False)]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", "-c",
                                                    help="PRM checkpoint directory [env: DREAMPRM_CHECKPOINT]")]
LANGUAGES: tuple[str, ...] = get_args(Language)
LanguageOpt = Annotated[str, typer.Option("--language", "-l", help=f"{'|'.join(LANGUAGES)}")]
AggregationOpt = Annotated[str | None, typer.Option(help="|".join(AGGREGATIONS))]


def _language(value: str) -> Any:
    return choice(value, LANGUAGES, "--language")


def _aggregation(value: str | None) -> Any:
    return choice(value, AGGREGATIONS, "--aggregation")


def _settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:  # a bad DREAMPRM_* variable
        fail(f"bad setting: {validation_failed(exc.errors()).message}")


@app.command()
def serve(checkpoint: CheckpointOpt = None,
          host: Annotated[str | None, typer.Option(help="bind address")] = None,
          port: Annotated[int | None, typer.Option(help="port")] = None) -> None:
    """Serve the HTTP API (settings from DREAMPRM_* variables; options override them)."""
    need_service_extra("serve")
    from service.checkpoints.detect import detect_format
    from service.checkpoints.manifest import read_manifest
    from service.http.app import create_app
    from service.http.logs import configure_logging
    from service.http.server import serve as serve_http

    settings = _settings(checkpoint=checkpoint, host=host, port=port)
    settings.checkpoint = settings.checkpoint_or_default()
    if settings.checkpoint is None:
        fail("no checkpoint: pass --checkpoint DIR or set DREAMPRM_CHECKPOINT (the default checkpoint, "
             "checkpoints/dreamprm-code-gemma3, is only found in a checkout of the repository)")
    try:  # fail before binding the port, not in the background
        found = detect_format(settings.checkpoint, base=settings.base_model)
        if settings.engine == "vllm":
            from service.serving.vllm_scorer import servable

            servable(settings.checkpoint)
        manifest = read_manifest(settings.checkpoint) if found.format == "dreamprm" else None
        if manifest is not None and manifest.weights == "adapter":
            from service.checkpoints.backbone import resolve_base

            resolve_base(manifest, settings.base_model, where=settings.checkpoint)  # found, and the right hash
    except PRMError as exc:
        fail(exc.message)
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
        fail(exc.message)
    except FileExistsError:
        fail(f"{out} exists: pass --overwrite to replace it")
    typer.echo(f"wrote {written}: serve it with  dreamprm serve --checkpoint {written}")


@app.command()
def split(file: Annotated[Path, typer.Argument(help="source file, or - for stdin")],
          language: LanguageOpt = "python",
          server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Split a program into function steps (locally, or by the server at --server)."""
    from service.schemas import SplitResponse, StepOut
    from service.steps import split_code

    lang = _language(language)
    code = read_text(file, "source file")
    try:
        if server:
            with _client(server, api_key) as prm:
                result = prm.split(code, lang)
        else:
            if lang != "python":
                need_service_extra(f"splitting {lang} locally", ("tree_sitter", "tree_sitter_language_pack"))
            local = split_code(code, lang)
            result = SplitResponse(steps=[StepOut.model_validate(s) for s in local.steps],
                                   parsed=local.parsed, language=lang)
    except PRMError as exc:
        fail(exc.message)
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
          language: LanguageOpt = "python",
          aggregation: AggregationOpt = None,
          server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Score a program: against the server at --server, or locally with a checkpoint."""
    from pydantic import ValidationError

    from service.schemas import ScoreItem

    lang, agg = _language(language), _aggregation(aggregation)
    code = read_text(file, "source file")
    text = read_arg(problem, "problem file")
    try:
        item = ScoreItem.model_validate({"problem": text, "code": code, "language": lang, "aggregation": agg})
        if server and not checkpoint:
            with _client(server, api_key) as prm, waiting("scoring"):
                result = prm.score(item.problem, item.code, language=item.language, aggregation=item.aggregation)
        else:
            need_service_extra("local scoring")
            settings = _settings(checkpoint=checkpoint)
            settings.checkpoint = settings.checkpoint_or_default()
            if settings.checkpoint is None:
                fail("nothing to score with: pass --server URL or --checkpoint DIR")
            with waiting(f"loading {settings.checkpoint.name} and scoring"):
                result = asyncio.run(_score_local(settings, item))
    except ValidationError as exc:
        fail(validation_failed(exc.errors()).message)
    except PRMError as exc:
        fail(exc.message)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for s in result.steps:
        shown = "unscored" if s.score is None else f"{s.score:.4f}"
        typer.echo(f"{s.index:>3}  {s.kind:<9} {s.name:<32} {shown}")
    typer.echo(f"score ({result.aggregation}): {result.score:.4f}" + ("  [truncated]" if result.truncated else ""))


async def _score_local(settings: Settings, item: Any) -> Any:
    from service.serving.engine import ScoringEngine

    engine = await ScoringEngine.start(settings)
    try:
        return await engine.score_item(item)
    finally:
        await engine.aclose()


@app.command()
def rerank(candidates: Annotated[list[Path] | None, typer.Argument(help="candidate files (none: generate --n)",
                                                                  dir_okay=False)] = None,
           problem: Annotated[str, typer.Option("--problem", "-p", help="TEXT, @file or - for stdin")] = "",
           n: Annotated[int | None, typer.Option(help="candidates to generate with the server's policy")] = None,
           tests: Annotated[Path | None, typer.Option(help="JSON list of public tests: {input, output} or {code}",
                                                      dir_okay=False)] = None,
           language: LanguageOpt = "python", aggregation: AggregationOpt = None,
           examples: ExamplesOpt = "auto", entry_point: EntryPointOpt = None, starter_code: StarterOpt = None,
           server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Rank candidate programs (or n generated ones) with the server at --server."""
    lang, agg = _language(language), _aggregation(aggregation)
    texts = [read_text(c, "candidate") for c in candidates or []]
    result = _rerank(server, api_key, read_arg(problem, "problem file"), texts or None, n=n, tests=tests,
                     language=lang, aggregation=agg, examples=examples, entry_point=entry_point,
                     starter_code=read_text(starter_code, "starter code") if starter_code else None)
    names = [str(c) for c in candidates or []]
    _print_ranking(result, names, as_json)


@app.command("ci-rerank")
def ci_rerank(candidates: Annotated[list[Path], typer.Argument(help="candidate files, or unified diffs of --base",
                                                                dir_okay=False)],
              problem: Annotated[Path, typer.Option("--problem", "-p", help="file with the problem statement",
                                                    dir_okay=False)],
              base: Annotated[Path | None, typer.Option(help="the file the diffs apply to", dir_okay=False)] = None,
              threshold: Annotated[float | None, typer.Option(
                  help="exit 1 unless the best candidate's score reaches this (default: rank only)")] = None,
              tests: Annotated[Path | None, typer.Option(help="JSON list of public tests; exit 1 unless the best "
                                                              "candidate passes them", dir_okay=False)] = None,
              language: LanguageOpt = "python", aggregation: AggregationOpt = None,
              examples: ExamplesOpt = "auto", entry_point: EntryPointOpt = None, starter_code: StarterOpt = None,
              server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Rank generated patches in CI and gate on the best one: exit 0 when it reaches --threshold (if given)
    and passes --tests (if given), 1 when a condition fails (the last line says which: score or tests), 2 on
    errors. With neither option it only ranks."""
    from clients.patch import PatchError, apply_unified_diff, looks_like_diff

    lang, agg = _language(language), _aggregation(aggregation)
    codes = []
    for path in candidates:
        text = read_text(path, "candidate")
        if looks_like_diff(text):
            if base is None:
                fail(f"{path} is a diff: pass --base FILE (the file it applies to)")
            try:
                text = apply_unified_diff(read_text(base, "--base file"), text)
            except PatchError as exc:
                fail(f"{path}: {exc}")
        codes.append(text)
    result = _rerank(server, api_key, read_text(problem, "problem file"), codes, n=None, tests=tests,
                     language=lang, aggregation=agg, examples=examples, entry_point=entry_point,
                     starter_code=read_text(starter_code, "starter code") if starter_code else None)
    _print_ranking(result, [str(c) for c in candidates], as_json)
    best = result.ranking[0] if result.ranking else None
    verdict = ci_verdict(best, str(candidates[best.index]) if best else "-", threshold=threshold,
                         tests_given=tests is not None)
    typer.echo(verdict.message, err=as_json)  # stdout stays pure JSON with --json
    raise typer.Exit(verdict.exit_code)


def _client(server: str, api_key: str | None) -> Any:
    from clients.prm import PRMClient

    return PRMClient(server, api_key=api_key)


def _rerank(server: str | None, api_key: str | None, problem: str, codes: list[str] | None, *, n: int | None,
            tests: Path | None, language: str, aggregation: str | None, examples: str = "auto",
            entry_point: str | None = None, starter_code: str | None = None) -> Any:
    if not server:
        fail("rerank needs a running service: pass --server URL or set DREAMPRM_URL")
    public = None
    if tests is not None:
        try:
            public = json.loads(read_text(tests, "tests file"))
        except json.JSONDecodeError as exc:
            fail(f"tests file {tests} is not JSON: {exc}")
    what = f"generating {n} candidates and ranking them" if n else f"ranking {len(codes or [])} candidates"
    try:
        with _client(server, api_key) as prm, waiting(f"{what} on {server}"):
            return prm.rerank(problem, codes, n=n, public_tests=public, language=language, aggregation=aggregation,
                              examples=examples, entry_point=entry_point, starter_code=starter_code)
    except PRMError as exc:
        fail(exc.message)
    except TypeError as exc:  # e.g. the tests file is a JSON object, not a list
        fail(f"tests file {tests}: expected a JSON list of {{input, output}} or {{code}} objects ({exc})")


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
    """Run the command; usage errors (unknown option, missing argument) are one line too, exit 2."""
    run_app(app, argv, "dreamprm")
