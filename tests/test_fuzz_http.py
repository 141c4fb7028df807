"""Schemathesis against the real server on a tiny checkpoint (``pytest -m fuzz``; .ci/run runs it):
a few thousand schema-generated requests, valid and invalid, must get no 5xx, responses that match the
OpenAPI schema (status codes, bodies, content types, 405 with Allow), and on every response the
``x-request-id`` and, on errors, the error shape (``tests/fuzz_hooks.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import live_server

pytestmark = pytest.mark.fuzz

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,unsupported_method,allow_header_conformance,"
          "request_id_and_error_shape")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))  # per operation and phase
SECONDS = int(os.environ.get("FUZZ_SECONDS", "150"))  # the run's time budget (CI: ~3 min in all)


def test_schemathesis_finds_no_contract_violation(tiny_checkpoint: Path, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    env = {"DREAMPRM_POLICY": "none", "DREAMPRM_TEST_WALL_S": "2", "DREAMPRM_MAX_CANDIDATES": "4",
           "DREAMPRM_MAX_PUBLIC_TESTS": "4", "DREAMPRM_SANDBOX_WORKERS": "2"}
    with live_server(tiny_checkpoint, tmp_path / "server.log", **env) as url:
        run = subprocess.run(
            [st, "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES),
             "--max-time", str(SECONDS),
             "--phases", "examples,coverage,fuzzing", "--workers", "2", "--request-timeout", "30",
             "--seed", "14", "--no-shrink", "--suppress-health-check", "all", "--max-failures", "20"],
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "NO_COLOR": "1"},
            capture_output=True, text=True, timeout=400, cwd=Path(__file__).resolve().parents[1])
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
