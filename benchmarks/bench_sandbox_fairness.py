"""Head-of-line blocking in the sandbox (issue 14): a one-test rerank sent while a hostile rerank occupies the
sandbox, against the same rerank on an idle server.

The real service (``python -m service``, tiny PRM, no policy) on a loopback port. The hostile rerank is the
audit's: 3 candidates that spin forever, each with its stdin tests, all results asked for. The small rerank
is one correct candidate with one stdin test. For each server configuration:
* ``unloaded``: the small rerank ``--samples`` times in a row, nothing else running;
* ``loaded``: the hostile rerank is sent, then (once its first runs hold the sandbox) the small rerank
  ``--samples`` times in a row while it is still running.
Configurations: the defaults (``DREAMPRM_SANDBOX_PER_REQUEST`` = workers - 1) and, for contrast,
``per_request = workers`` (one request may hold every worker, as before issue 14).
Target: every loaded sample ≤ 2 × the unloaded median (``worst_ratio``; ``ratio`` compares the
medians). Output: ``results/sandbox_fairness.json``.

    .venv/bin/python -m benchmarks.bench_sandbox_fairness
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RESULTS, machine_info, now_iso, table, write_json

PROBLEM = "Read n and print n + 1."
SMALL = {"problem": PROBLEM, "candidates": ["print(int(input()) + 1)\n"],
         "public_tests": [{"input": "41\n", "output": "42\n"}]}
SPIN = "while True:\n    pass\n"


def hostile(tests: int) -> dict[str, Any]:
    return {"problem": PROBLEM, "candidates": [SPIN, SPIN + "# 2\n", SPIN + "# 3\n"], "all_test_results": True,
            "public_tests": [{"input": f"{i}\n", "output": f"{i + 1}\n"} for i in range(tests)]}


def small_rerank(client: httpx.Client) -> float:
    started = time.perf_counter()
    r = client.post("/v1/rerank", json=SMALL)
    r.raise_for_status()
    assert r.json()["ranking"][0]["tests"]["status"] == "passed", r.text
    return time.perf_counter() - started


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(3):
            small_rerank(client)  # warm-up: fork server, score path
        unloaded = [small_rerank(client) for _ in range(args.samples)]
        box: dict[str, Any] = {}

        def send_hostile() -> None:
            started = time.perf_counter()
            r = client.post("/v1/rerank", json=hostile(args.hostile_tests))
            box["seconds"], box["statuses"] = time.perf_counter() - started, [
                c["tests"]["status"] for c in r.json()["ranking"]]

        thread = threading.Thread(target=send_hostile)
        thread.start()
        time.sleep(0.5)  # its first runs hold the sandbox
        loaded = []
        for _ in range(args.samples):
            if not thread.is_alive():
                break
            loaded.append(small_rerank(client))
        hostile_running = thread.is_alive()
        thread.join()
    base = statistics.median(unloaded)
    ratio = statistics.median(loaded) / base if loaded else None
    return {"unloaded_s": unloaded, "loaded_s": loaded, "unloaded_median_s": base,
            "loaded_median_s": statistics.median(loaded) if loaded else None, "ratio": ratio,
            "loaded_max_s": max(loaded) if loaded else None, "worst_ratio": max(loaded) / base if loaded else None,
            "hostile_still_running_after_samples": hostile_running, "hostile_seconds": box.get("seconds"),
            "hostile_statuses": box.get("statuses")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--hostile-tests", type=int, default=4)
    parser.add_argument("--wall-s", type=float, default=3.0, help="DREAMPRM_TEST_WALL_S (audit: 6-10 s)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    from tests.live import live_server_process
    from tests.tiny import save_tiny_prm

    report: dict[str, Any] = {"benchmark": "sandbox_fairness", "date": now_iso(), "machine": machine_info(),
                              "args": vars(args), "target": "worst_ratio (slowest loaded / unloaded median) <= 2",
                              "rows": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_tiny_prm(Path(tmp) / "tiny-prm")
        for name, per_request in (("default", None), ("one request may hold every worker", args.workers)):
            env = {"DREAMPRM_POLICY": "none", "DREAMPRM_SANDBOX_WORKERS": str(args.workers),
                   "DREAMPRM_TEST_WALL_S": str(args.wall_s), "DREAMPRM_CACHE_SIZE": "0"}
            if per_request is not None:
                env["DREAMPRM_SANDBOX_PER_REQUEST"] = str(per_request)
            log = Path(tmp) / f"server-{per_request}.log"
            with live_server_process(checkpoint, log, ready_timeout_s=600, **env) as (url, _proc):  # a busy machine
                result = measure(url, args)
            report["rows"].append({"config": name, "sandbox_per_request": per_request or max(1, args.workers - 1),
                                   **result})
            ratio = result["ratio"]
            rows.append([name, f"{result['unloaded_median_s'] * 1000:.0f}",
                         "-" if result["loaded_median_s"] is None else f"{result['loaded_median_s'] * 1000:.0f}",
                         "-" if ratio is None else f"{ratio:.2f}x",
                         "-" if ratio is None else f"{result['worst_ratio']:.2f}x",
                         f"{result['hostile_seconds']:.1f}"])
            print(f"  {name}: {rows[-1]}", flush=True)
    print(table(["config", "unloaded ms", "loaded ms", "median ratio", "worst ratio", "hostile s"], rows))
    write_json(RESULTS / "sandbox_fairness.json", report)


if __name__ == "__main__":
    main()
