"""Import rules of STYLE §1 and docs/ARCHITECTURE.md, checked on every module's AST, plus the lazy-import promise.

Rooms: the contract (``service.{aggregate,encoding,errors,schemas,cof}``, ``service.steps``) at the top,
then ``settings``, ``sandbox``, ``checkpoints`` (with ``service.model``), ``policy``, ``serving``, ``http`` and
the ``cli`` leaf; ``clients`` and ``trainer`` beside the service. Each room may import the rooms listed in
``MAY_IMPORT``; nothing imports the CLI but the entry points; heavy (torch) and HTTP (fastapi) libraries only
where listed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "safetensors", "peft", "accelerate"}
HTTP = {"fastapi", "starlette", "uvicorn"}
# module -> top-level packages it may import beyond the stdlib and its own project
ALLOWED_HEAVY = {"service/model.py", "service/policy/local.py", "service/checkpoints/backbone.py",
                 "service/checkpoints/adapter.py", "service/checkpoints/save.py",
                 "service/checkpoints/hf_export.py",
                 # the checkpoint formats' model modules (service/checkpoints/{detect,templates}.py stay pure)
                 "service/checkpoints/load.py", "service/checkpoints/lora.py", "service/checkpoints/scorers.py",
                 "service/checkpoints/convert.py"}
ALLOWED_HTTP = {"service/http/app.py", "service/http/routes.py", "service/cli/main.py", "service/http/server.py",
                "service/http/web/docs.py", "service/http/web/playground.py"}
PURE = {"service/schemas.py": {"pydantic", "service"}, "service/errors.py": set(),
        "service/steps/__init__.py": {"service"}, "service/encoding.py": {"service"},
        "service/aggregate.py": set(), "service/steps/treesitter.py": {"service", "tree_sitter",
                                                                      "tree_sitter_language_pack"},
        "service/sandbox/__init__.py": {"service"}, "service/sandbox/runner.py": set(),
        "service/checkpoints/detect.py": {"service"}, "service/checkpoints/templates.py": {"service"},
        "service/http/json_guard.py": {"service"}}
CONTRACT = {"aggregate", "encoding", "errors", "schemas", "cof", "steps"}
SERVICE_ROOMS = {"contract", "settings", "sandbox", "checkpoints", "policy", "serving", "http", "cli"}
MAY_IMPORT = {
    "contract": {"contract"},
    "settings": {"contract"},
    "sandbox": {"contract"},
    "checkpoints": {"contract"},
    "policy": {"contract", "checkpoints"},
    "serving": {"contract", "settings", "checkpoints", "policy", "sandbox"},
    "http": {"contract", "settings", "sandbox", "policy", "serving"},
    "cli": SERVICE_ROOMS | {"clients"},
    "clients": {"contract", "clients"},
    "trainer": {"contract", "sandbox", "checkpoints", "policy", "trainer"},
}
ENTRY_POINTS = {"service/__main__.py", "trainer/__main__.py"}  # may also import the CLI


def _room(module: str) -> str:
    """The room of a dotted module name (``service.serving.engine`` -> ``serving``)."""
    parts = module.split(".")
    if parts[0] != "service":
        return parts[0]
    if len(parts) == 1 or parts[1] == "__main__":
        return "entry"
    if parts[1] in CONTRACT:
        return "contract"
    return "checkpoints" if parts[1] == "model" else parts[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _project_imports(path: Path) -> set[str]:
    """Dotted project modules ``path`` imports (``from service import x`` counts as ``service.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "service" and node.level == 0:
            found.update(f"service.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in {"service", "trainer", "clients"}}


def _modules(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


@pytest.mark.parametrize("path", _modules("service", "clients", "trainer"), ids=lambda p: str(p.relative_to(ROOT)))
def test_import_rules(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    names = _imports(path)
    if rel not in ALLOWED_HEAVY and not rel.startswith("trainer/"):
        assert not names & HEAVY, f"{rel} imports {names & HEAVY}"
    if rel not in ALLOWED_HTTP:
        assert not names & HTTP, f"{rel} imports {names & HTTP}"
    assert "trainer" not in names or rel.startswith("trainer/"), f"{rel} imports trainer"
    if rel.startswith("clients/"):
        assert names <= set(sys.stdlib_module_names) | {"httpx", "service", "clients", "pydantic"}
    if rel in PURE:
        extra = names - set(sys.stdlib_module_names) - {"__future__"}
        assert extra <= PURE[rel], f"{rel} imports {extra - PURE[rel]}"


@pytest.mark.parametrize("path", _modules("service", "clients", "trainer"), ids=lambda p: str(p.relative_to(ROOT)))
def test_rooms_import_only_the_rooms_below(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    if rel in ENTRY_POINTS:
        return
    room = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
    wrong = _upward_imports(path, room)
    assert not wrong, f"{rel} ({room}) imports {sorted(wrong)}; {room} may import {sorted(MAY_IMPORT[room])}"


def _upward_imports(path: Path, room: str) -> set[str]:
    return {m for m in _project_imports(path) if _room(m) != room and _room(m) not in MAY_IMPORT[room]}


def test_the_room_rules_catch_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from service.errors import InvalidInput\nfrom service.serving.engine import ScoringEngine\n"
                   "from service import cli\n")
    assert _upward_imports(bad, "contract") == {"service.serving.engine", "service.cli"}
    assert _upward_imports(bad, "cli") == set()


def test_service_package_init_is_empty() -> None:
    assert (ROOT / "service" / "__init__.py").read_text().strip() == ""


def test_http_layer_loads_no_torch() -> None:
    code = ("import sys, service.http.app, service.cli.main, service.serving.engine, service.steps, "
            "service.checkpoints.detect, service.checkpoints.templates; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
