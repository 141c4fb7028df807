"""B8: the forward pass on vLLM (issue 18) — our ``/v1/score`` on the torch and vllm engines against vLLM itself,
interleaved in one run, on the same items.

Items: LeetCode problems with their reference solutions (``shared/data/leetcodedataset_train.jsonl``, file order,
about 300-500 tokens each), scored with the default checkpoint exported as a token classifier
(``python -m trainer export CKPT OUT --format hf``). Four ways, each timed for one batch request holding every
item and for 8 concurrent clients sending one item per request:

* ``ours/torch``: ``POST /v1/score`` on a live ``python -m service`` (torch engine, score cache off);
* ``ours/vllm``: the same service with ``DREAMPRM_ENGINE=vllm`` on the STEP-pooling vLLM server below;
* ``vllm/step``: that vLLM server directly (``POST /pooling``, ``token_classify`` with STEP pooling at the
  separator, our token ids, one sequence per item): what the forward pass costs in vLLM, nothing around it;
* ``vllm/prefix``: a second vLLM server with its automatic prefix cache, one sequence per step prefix (``classify``
  at the last token): what a vLLM user does without STEP pooling or us.

Both vLLM servers get every compute thread and Intel OpenMP preloaded, as vLLM's CPU guide asks. Every way is
warmed up, then rounds run every way in a rotating order (load drifting over time hits all
alike); each run prefixes every problem with its own run number, so no prefix cache carries over from one run to
the next (within a run, ``vllm/prefix`` shares each item's prefixes, as it should). Reported: median seconds
and items' tokens/s (our encoding's tokens, the same numerator for every way),
and the largest step-score difference of each way from ``ours/torch``. Results:
``benchmarks/results/engine_<dtype>.json``.

    .venv/bin/python -m benchmarks.bench_engine                     # float32 (what the service picks here)
    .venv/bin/python -m benchmarks.bench_engine --dtype bfloat16 --items 16 --rounds 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_concurrency import pick_items
from benchmarks.common import RESULTS, machine_info, now_iso, table, write_json
from service.serving.vllm_scorer import VLLMScorer, pooled_rows
from service.settings import DEFAULT_CHECKPOINT
from tests.live import live_server, vllm_server

CLIENTS = 8
Way = Callable[[list[dict[str, Any]], str], list[list[float]]]  # (items, mode) -> step scores per item


def export(out: Path) -> Path:
    """The default checkpoint as a token classifier (once)."""
    if not (out / "config.json").is_file():
        from service.checkpoints.hf_export import export_hf_stage

        export_hf_stage(DEFAULT_CHECKPOINT, out)
    return out


def fan_out(items: list[Any], many: Callable[[list[Any]], list[list[float]]], mode: str) -> list[list[float]]:
    """``many(items)`` in one request (mode ``batch``), or ``many([item])`` from ``CLIENTS`` threads (``c8``)."""
    if mode == "batch":
        return many(items)
    with cf.ThreadPoolExecutor(CLIENTS) as pool:
        return [r[0] for r in pool.map(lambda it: many([it]), items)]


def ours(url: str, client: httpx.Client) -> Way:
    def many(items: list[dict[str, Any]]) -> list[list[float]]:
        r = client.post(f"{url}/v1/score", json={"items": items}, timeout=600)
        r.raise_for_status()
        return [[s["score"] for s in it["steps"]] for it in r.json()["items"]]
    return lambda items, mode: fan_out(items, many, mode)


def raw_step(url: str, client: httpx.Client, scorer: VLLMScorer) -> Way:
    """Our token ids straight to vLLM's STEP pooling; rows read as the vllm engine reads them."""
    def many(encs: list[Any]) -> list[list[float]]:
        r = client.post(f"{url}/pooling", json={"model": "prm", "input": [e.input_ids for e in encs],
                                                 "task": "token_classify", "use_activation": False}, timeout=600)
        r.raise_for_status()
        rows = pooled_rows(r.json(), len(encs))
        return [[_sigmoid(x) for x in scorer.step_logits(e, item)] for e, item in zip(encs, rows, strict=True)]

    def way(items: list[dict[str, Any]], mode: str) -> list[list[float]]:
        return fan_out([encode(scorer, it) for it in items], many, mode)
    return way


def raw_prefix(url: str, client: httpx.Client, scorer: VLLMScorer) -> Way:
    """One sequence per step prefix (ending at its separator), ``classify`` at the last token."""
    def many(encs: list[Any]) -> list[list[float]]:
        seqs = [e.input_ids[: p + 1] for e in encs for p in e.step_end_positions]
        r = client.post(f"{url}/pooling", json={"model": "prm", "input": seqs, "task": "classify",
                                                 "use_activation": False}, timeout=600)
        r.raise_for_status()
        rows = [d["data"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]  # classify: [l0, l1] each
        out, k = [], 0
        for e in encs:
            out.append([_sigmoid(rows[k + j][1] - rows[k + j][0]) for j in range(len(e.step_end_positions))])
            k += len(e.step_end_positions)
        return out

    def way(items: list[dict[str, Any]], mode: str) -> list[list[float]]:
        return fan_out([encode(scorer, it) for it in items], many, mode)
    return way


def encode(scorer: VLLMScorer, item: dict[str, Any]) -> Any:
    return scorer.encode(item["problem"], item["steps"])


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="compute threads of every server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    model = export(Path(".cache/bench-engine/prm-hf").resolve())
    probe = VLLMScorer(model, url="http://unused")
    sep = probe.separator_id
    step_pooler = f'{{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": {sep}}}'
    omp = {"OMP_NUM_THREADS": str(args.threads)}
    iomp = Path(".venv-vllm/lib/libiomp5.so").resolve()
    if iomp.is_file():  # vLLM's CPU guide: Intel OpenMP preloaded
        omp["LD_PRELOAD"] = str(iomp)
    service_env = {"DREAMPRM_CACHE_SIZE": "0", "DREAMPRM_DTYPE": args.dtype, "DREAMPRM_THREADS": str(args.threads),
                   "DREAMPRM_SPLIT_WORKERS": "0"}
    with (vllm_server(model, "prm", work / "vllm-step.log", "--runner", "pooling", "--pooler-config", step_pooler,
                      dtype=args.dtype, env=omp) as step_url,
          vllm_server(model, "prm", work / "vllm-prefix.log", "--runner", "pooling", "--enable-prefix-caching",
                      "--pooler-config", '{"task": "classify"}', dtype=args.dtype, env=omp) as prefix_url,
          live_server(model, work / "torch.log", **service_env) as torch_url,
          live_server(model, work / "ours-vllm.log", DREAMPRM_ENGINE="vllm", DREAMPRM_ENGINE_URL=step_url,
                      **service_env) as ours_vllm_url,
          httpx.Client(limits=httpx.Limits(max_connections=CLIENTS * 2)) as client):
        raw = pick_items(args.items)
        # every way gets the same (problem, steps): the service's own split of each reference solution
        items = [{"problem": it["problem"], "steps": _steps(client, torch_url, it["code"])} for it in raw]
        tokens = sum(encode(probe, {**it, "problem": f"Run 0000. {it['problem']}"}).n_tokens for it in items)
        n_steps = sum(len(it["steps"]) for it in items)
        ways: dict[str, Way] = {"ours/torch": ours(torch_url, client), "ours/vllm": ours(ours_vllm_url, client),
                                "vllm/step": raw_step(step_url, client, probe),
                                "vllm/prefix": raw_prefix(prefix_url, client, probe)}
        times: dict[str, list[float]] = {f"{w}/{m}": [] for w in ways for m in ("batch", "c8")}
        names = list(times)
        runs = 0
        for r in range(args.rounds + 1):  # round 0 warms every way up
            for name in names[r % len(names):] + names[: r % len(names)]:
                way, mode = name.rsplit("/", 1)
                runs += 1  # every run scores new token sequences: no prefix cache carries over between runs
                fresh = [{**it, "problem": f"Run {runs:04d}. {it['problem']}"} for it in items]
                started = time.perf_counter()
                got = ways[way](fresh, mode)
                if r:
                    times[name].append(time.perf_counter() - started)
                if len(got) != len(items):
                    raise RuntimeError(f"{name}: {len(got)} results for {len(items)} items")
            print(f"round {r}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items() if t), flush=True)
        # the scores compared: every way once more on the same inputs (untimed)
        scores = {way: ways[way]([{**it, "problem": f"Check. {it['problem']}"} for it in items], "batch")
                  for way in ways}
    reference = [x for it in scores["ours/torch"] for x in it]
    rows, results = [], {}
    for name, ts in times.items():
        way = name.rsplit("/", 1)[0]
        med = statistics.median(ts)
        diff = max(abs(a - b) for a, b in zip((x for it in scores[way] for x in it), reference, strict=True))
        results[name] = {"seconds": ts, "median_s": med, "tokens_per_s": tokens / med, "max_score_diff": diff}
        rows.append([name, f"{med:.2f}", f"{tokens / med:,.0f}", f"{diff:.1e}"])
    step_tps = {m: results[f"vllm/step/{m}"]["tokens_per_s"] for m in ("batch", "c8")}
    ratios = {m: {"ours_vllm_over_vllm_step": results[f"ours/vllm/{m}"]["tokens_per_s"] / step_tps[m],
                  "ours_vllm_over_ours_torch": results[f"ours/vllm/{m}"]["tokens_per_s"]
                  / results[f"ours/torch/{m}"]["tokens_per_s"],
                  "ours_torch_over_vllm_step": results[f"ours/torch/{m}"]["tokens_per_s"] / step_tps[m]}
              for m in ("batch", "c8")}
    print(f"\n{len(items)} items, {tokens:,} tokens, {n_steps} steps, {args.dtype}, {args.threads} threads, "
          f"{args.rounds} rounds (medians)\n")
    print(table(["way/mode", "median s", "items' tokens/s", "max |score - ours/torch|"], rows))
    for m, rs in ratios.items():
        print(f"{m}: ours/vllm = {rs['ours_vllm_over_vllm_step']:.2f}x vllm/step, "
              f"{rs['ours_vllm_over_ours_torch']:.2f}x ours/torch; ours/torch = {rs['ours_torch_over_vllm_step']:.2f}x "
              "vllm/step")
    write_json(RESULTS / f"engine_{args.dtype}.json", {
        "benchmark": "engine", "when": now_iso(), "machine": machine_info(torch_info=True), "dtype": args.dtype,
        "threads": args.threads, "items": len(items), "tokens": tokens, "steps": n_steps, "rounds": args.rounds,
        "clients": CLIENTS, "results": results, "ratios": ratios})


def _steps(client: httpx.Client, url: str, code: str) -> list[str]:
    r = client.post(f"{url}/v1/split", json={"code": code}, timeout=60)
    r.raise_for_status()
    return [s["text"] for s in r.json()["steps"]]


if __name__ == "__main__":
    main()
