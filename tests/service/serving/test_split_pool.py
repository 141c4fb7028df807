"""SplitPool: large programs are split in a worker process (the parse holds the GIL), with the same result
and errors as ``split_code``; and ``/ready`` stays fast while large /v1/split requests are being parsed."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.errors import InvalidInput
from service.serving.split_pool import SplitPool
from service.steps import split_code
from tests.live import wait_until_up
from tests.service.redis_server import free_port

REPO = Path(__file__).resolve().parents[3]


def big_program(n_bytes: int, functions: int = 100) -> str:
    body = "".join(f"    y{j} = x + {j} * len([k for k in range(10) if k % 2])\n" for j in range(400))
    one = "def f{i}(x):\n" + body + "    return x\n\n\n"
    per = max(1, n_bytes // len(one))
    return "".join(one.format(i=i) for i in range(min(functions, per)))


async def test_large_programs_go_to_a_process_with_the_same_result() -> None:
    pool = SplitPool(workers=1, offload_bytes=1000)
    try:
        code = big_program(20_000)
        result = await pool.split(code, "python")
        assert result == split_code(code, "python") and pool._executor is not None
        small = await SplitPool(workers=1, offload_bytes=1 << 20).split("def f():\n    return 1\n", "python")
        assert small.parsed and [s.name for s in small.steps] == ["f"]
        with pytest.raises(InvalidInput, match="unknown language"):  # a worker's error comes back as itself
            await pool.split(code, "cobol")
    finally:
        pool.close()


def test_ready_stays_fast_during_concurrent_large_splits(tmp_path: Path) -> None:
    """The audit: three concurrent 600 kB /v1/split requests made /ready take 2.7 s. The parse now runs in
    worker processes; /ready is polled every 20 ms meanwhile (server in its own process)."""
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.service.fake_server", str(port)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/ready", log, timeout_s=60, poll_s=0.1)
        code = big_program(600_000)
        assert len(code) > 550_000
        latencies: list[float] = []
        statuses: list[int] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client() as client:
                while not done.is_set():
                    t = time.perf_counter()
                    assert client.get(f"{url}/ready").status_code == 200
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.02)

        def split() -> None:
            with httpx.Client(timeout=120) as client:
                statuses.append(client.post(f"{url}/v1/split", json={"code": code}).status_code)

        prober = threading.Thread(target=probe)
        prober.start()
        workers = [threading.Thread(target=split) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done.set()
        prober.join()
    finally:
        proc.terminate()
        proc.wait(30)
    assert statuses == [200, 200, 200]
    latencies.sort()
    p90 = latencies[int(len(latencies) * 0.9)]
    print(f"/ready under load: n={len(latencies)} median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p90 {p90 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert len(latencies) >= 5 and p90 < 0.1, latencies[-10:]
