"""A throw-away ``redis-server`` for tests: ``with running_redis() as server: ... server.url``.

No persistence (``--save '' --appendonly no``), a free local port, killed at exit. ``kill()``
stops it hard (SIGKILL, as a crash would); ``restart()`` starts a new, empty one on the same
port; ``pause()``/``resume()`` freeze it (SIGSTOP/SIGCONT), like a hung or unreachable host.
Without a ``redis-server`` binary the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

START_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """The path of ``redis-server``; skips the test (fails it under CI) when there is none."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server missing")
        pytest.skip("redis-server missing")
    return path


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError("redis-server is already running")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}")
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.2,
                                 socket_connect_timeout=0.2)
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:
                last = exc
            finally:
                client.close()
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING: {last}")

    def kill(self) -> None:
        """SIGKILL the server and reap it (no-op when it is not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel but never answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server if it runs, then start a fresh, empty one on the same port."""
        self.kill()
        self.start()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started ``RedisServer``; killed when the block exits."""
    server = RedisServer(redis_binary())
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()  # a stopped process still dies on SIGKILL, but be explicit
        server.kill()
