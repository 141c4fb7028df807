"""Start the real service (``python -m service`` under uvicorn) on a loopback port for a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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
