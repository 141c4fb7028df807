"""HTTP edge under hostile load (issue 14), against a real server process (fake model, loopback):

* ``/ready`` latency, polled every 20 ms, while 3 clients each send a 600 kB program to ``/v1/split``
  (the audit: 2.7 s), with parsing in worker processes (``DREAMPRM_SPLIT_WORKERS=2``, the default) and
  on a thread (``=0``, the old way), interleaved;
* slowloris: 300 connections that send one header line per second; when they are all dropped (the
  default ``DREAMPRM_HTTP_HEADER_TIMEOUT_S``), what they were answered, and ``/ready`` meanwhile.

``python -m benchmarks.bench_http_edges`` -> benchmarks/results/http_edges.json
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from benchmarks.common import REPO, RESULTS, machine_info, write_json
from tests.live import wait_until_up
from tests.service.redis_server import free_port
from tests.service.serving.test_split_pool import big_program


@contextmanager
def server(**env: str) -> Iterator[str]:
    port = free_port()
    log = RESULTS / ".http_edges_server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.service.fake_server", str(port)], cwd=REPO,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/ready", log, timeout_s=60, poll_s=0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.unlink(missing_ok=True)


class ReadyProbe:
    """Polls /ready every 20 ms on a thread; ``stop()`` returns the latencies in ms."""

    def __init__(self, url: str) -> None:
        self.url, self.ms, self._done = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._done.is_set():
                t = time.perf_counter()
                client.get(f"{self.url}/ready")
                self.ms.append((time.perf_counter() - t) * 1000)
                time.sleep(0.02)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        ms = sorted(self.ms)
        return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
                "p90_ms": round(ms[int(len(ms) * 0.9)], 1), "p99_ms": round(ms[int(len(ms) * 0.99)], 1),
                "max_ms": round(ms[-1], 1)}


def concurrent_splits(workers: int, code: str) -> dict[str, Any]:
    with server(DREAMPRM_SPLIT_WORKERS=str(workers)) as url:
        probe = ReadyProbe(url)
        statuses: list[int] = []

        def split() -> None:
            with httpx.Client(timeout=300) as client:
                statuses.append(client.post(f"{url}/v1/split", json={"code": code}).status_code)

        start = time.perf_counter()
        threads = [threading.Thread(target=split) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        return {"split_workers": workers, "statuses": statuses, "splits_s": round(seconds, 2), "ready": probe.stop()}


def slowloris(n: int = 300) -> dict[str, Any]:
    with server() as url:
        host, port = url.removeprefix("http://").split(":")
        socks = [socket.create_connection((host, int(port))) for _ in range(n)]
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\n")
            s.setblocking(False)
        probe = ReadyProbe(url)
        start, open_ = time.perf_counter(), set(range(n))
        answered: dict[int, int] = {}
        line = 0
        while open_ and time.perf_counter() - start < 60:
            for i in list(open_):
                try:
                    data = socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 "):
                    status = int(data.split()[1])
                    answered[status] = answered.get(status, 0) + 1
                open_.discard(i)  # answered or closed
            if time.perf_counter() - start > line:  # one more header line a second on each open connection
                line += 1
                for i in open_:
                    try:
                        socks[i].sendall(f"X-Slow-{line}: 1\r\n".encode())
                    except OSError:
                        pass
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        for s in socks:
            s.close()
        return {"connections": n, "header_lines_per_s": 1, "all_dropped_s": round(seconds, 2),
                "still_open": len(open_), "answers": answered, "ready": probe.stop()}


def main() -> None:
    code = big_program(600_000)
    runs = [concurrent_splits(w, code) for w in (2, 0, 2, 0)]  # interleaved: the machine drifts
    result = {"machine": machine_info(), "program_bytes": len(code), "concurrent_splits": runs,
              "slowloris": slowloris()}
    for r in runs:
        print(f"split_workers={r['split_workers']}: 3 x {len(code)} B splits in {r['splits_s']} s; /ready {r['ready']}")
    print(f"slowloris: {result['slowloris']}")
    write_json(RESULTS / "http_edges.json", result)


if __name__ == "__main__":
    main()
