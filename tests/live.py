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


@contextmanager
def live_server(checkpoint: Path, log: Path, **env: str) -> Iterator[str]:
    """Yield the base URL once ``/ready`` is true; stop the server at exit."""
    port = free_port()
    full_env = {**os.environ, "DREAMPRM_CHECKPOINT": str(checkpoint), "DREAMPRM_PORT": str(port),
                "DREAMPRM_DTYPE": "float32", "DREAMPRM_THREADS": "1", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service"], env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
