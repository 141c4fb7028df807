"""Import rules of STYLE §1, checked on every module's AST, plus the lazy-import promise."""

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
ALLOWED_HEAVY = {"service/model.py", "service/local_policy.py",
                 # the checkpoint formats' model modules (service/checkpoints/{detect,templates}.py stay pure)
                 "service/checkpoints/load.py", "service/checkpoints/lora.py", "service/checkpoints/scorers.py",
                 "service/checkpoints/convert.py"}
ALLOWED_HTTP = {"service/app.py", "service/routes.py", "service/cli.py", "service/http_server.py",
                "service/web/docs.py", "service/web/playground.py"}
PURE = {"service/schemas.py": {"pydantic", "service"}, "service/errors.py": set(),
        "service/steps.py": {"service"}, "service/encoding.py": {"service"},
        "service/aggregate.py": set(), "service/steps_treesitter.py": {"service", "tree_sitter",
                                                                      "tree_sitter_language_pack"},
        "service/sandbox.py": {"service"}, "service/sandbox_runner.py": set(),
        "service/checkpoints/detect.py": {"service"}, "service/checkpoints/templates.py": {"service"},
        "service/json_guard.py": {"service"}}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


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


def test_service_package_init_is_empty() -> None:
    assert (ROOT / "service" / "__init__.py").read_text().strip() == ""


def test_http_layer_loads_no_torch() -> None:
    code = ("import sys, service.app, service.cli, service.engine, service.steps, service.checkpoints.detect, "
            "service.checkpoints.templates; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
