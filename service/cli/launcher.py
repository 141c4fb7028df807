"""Entry point of the ``dreamprm`` command: says which extra is missing instead of a traceback, then runs
``service.cli.main``. Stdlib only, so that it works on a client-only install (``pip install .``)."""

from __future__ import annotations

import importlib.util
import sys

CLI_EXTRA = "pip install 'dreamprm-code[cli]'"
SERVICE_EXTRA = "pip install 'dreamprm-code[service]'"
# what local scoring and serving import (the CLI alone needs only typer)
SERVICE_MODULES = ("torch", "transformers", "fastapi", "uvicorn", "pydantic_settings")


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are not installed."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> None:
    """``dreamprm ...``: exit 2 with one line naming the extra when the CLI's dependencies are absent."""
    if absent := missing(("typer",)):
        sys.stderr.write(f"error: the dreamprm command needs the 'cli' extra ({CLI_EXTRA}; missing: "
                         f"{', '.join(absent)}); serving and local scoring need the 'service' extra "
                         f"({SERVICE_EXTRA})\n")
        raise SystemExit(2)
    from service.cli.main import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
