"""What the ``dreamprm`` command shows a user: one-line errors (exit 2), inputs read with those errors, choices
checked, the ``ci-rerank`` verdict, and a spinner while a long call runs. Stdlib, typer and ``service.schemas``."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

try:  # typer >= 0.22 vendors its own click; older ones use the click package
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

from service.cli.launcher import SERVICE_EXTRA, SERVICE_MODULES, missing
from service.schemas import RankedCandidate

T = TypeVar("T", bound=str)
NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
USER_ERROR = 2  # documented exit status of every user error


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit 2."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(USER_ERROR)


def run_app(app: typer.Typer, argv: list[str] | None, prog_name: str) -> NoReturn:
    """Run a typer app; its usage errors (unknown option, missing argument, bad value) are one line, exit 2.
    Other exceptions propagate to the caller."""
    try:
        code: Any = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except NO_ARGS_IS_HELP as exc:  # a bare command: its help
        typer.echo(exc.format_message())
        raise SystemExit(0) from None
    except click.exceptions.ClickException as exc:
        ctx = exc.ctx if isinstance(exc, click.exceptions.UsageError) else None
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        raise SystemExit(USER_ERROR) from None
    except typer.Abort:
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def read_text(path: Path | str, what: str = "file") -> str:
    """A UTF-8 text file (``-``: stdin), or exit 2 with one line saying why it cannot be read."""
    if str(path) == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            fail("stdin is not UTF-8 text")
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{what} {p} does not exist")
    except IsADirectoryError:
        fail(f"{what} {p} is a directory, not a file")
    except UnicodeDecodeError as exc:
        fail(f"{what} {p} is not UTF-8 text (byte {exc.start}: {exc.reason})")
    except OSError as exc:
        fail(f"cannot read {what} {p}: {exc.strerror or exc}")


def read_arg(value: str, what: str) -> str:
    """``@path`` reads a file, ``-`` reads stdin, anything else is the text itself."""
    if value == "-" or value.startswith("@"):
        return read_text(value if value == "-" else value[1:], what)
    return value


def choice(value: T | None, allowed: Iterable[str], option: str) -> T | None:
    """``value`` when it is one of ``allowed`` (or None), else exit 2 naming the choices."""
    options = list(allowed)
    if value is not None and value not in options:
        fail(f"{option} {value!r} is not one of {', '.join(options)}")
    return value


def need_service_extra(what: str, modules: tuple[str, ...] = SERVICE_MODULES) -> None:
    """Exit 2 with the install hint when serving or local work lacks its dependencies (``modules``)."""
    if absent := missing(modules):
        fail(f"{what} needs the 'service' extra ({SERVICE_EXTRA}; missing: {', '.join(absent)}); "
             "or pass --server URL to use a running service")


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner with the elapsed seconds on stderr while a long call runs (only on a terminal)."""
    if not sys.stderr.isatty():
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        start = time.monotonic()
        for frame in itertools.cycle("|/-\\"):
            if stop.wait(0.25):
                break
            sys.stderr.write(f"\r{frame} {what} {time.monotonic() - start:.0f} s ")
            sys.stderr.flush()
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()

    thread = threading.Thread(target=spin, name="dreamprm-spinner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The CI gate's answer: exit status 0 (pass) or 1 (a condition failed), and the line saying why."""

    exit_code: int
    message: str


def ci_verdict(best: RankedCandidate | None, name: str, *, threshold: float | None, tests_given: bool) -> Verdict:
    """Gate on the top candidate: its score reaches ``threshold`` (when given) and it passes the public tests
    (when ``tests_given``). Neither given: rank only, exit 0. The message names each condition that failed."""
    if best is None or best.score is None:
        why = f" ({best.error})" if best is not None and best.error else ""
        return Verdict(1, f"FAIL: no candidate could be scored{why}")
    if threshold is None and not tests_given:
        return Verdict(0, f"rank only (no --threshold, no --tests): best is {name} with score {best.score:.4f}")
    failed: list[tuple[str, str]] = []
    passed: list[tuple[str, str]] = []
    if threshold is not None:
        (passed if best.score >= threshold else failed).append(
            ("score", f"score {best.score:.4f} {'>=' if best.score >= threshold else '<'} --threshold {threshold:g}"))
    if tests_given:
        t = best.tests
        count = f" ({t.n_passed} of {t.n_tests} passed)" if t is not None else ""
        ok = best.tests_passed is not False
        (passed if ok else failed).append(("tests", ("passes" if ok else "fails") + f" the public tests{count}"))
    if failed:
        return Verdict(1, f"FAIL ({', '.join(k for k, _ in failed)}): best candidate {name}: "
                          + "; ".join(m for _, m in failed))
    return Verdict(0, f"OK: best candidate {name}: " + "; ".join(m for _, m in passed))
