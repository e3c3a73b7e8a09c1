#!/usr/bin/env bash
# The one command a session with a lent GPU runs to add compute to the shipped model/:
#     run(command="bash scripts/gpu_default_model.sh", timeout_s=600)
# (training/README.md, "A GPU session"). Within the 10-minute command limit it benchmarks the
# training step (~20 s), then runs training.gpu_run with what is left of BUDGET_S (default
# 550 s in all, leaving ~45 s before the kill). $OUT gets at most 8 files: model/ (config.json,
# bf16 safetensors shards), corpus_manifest.json, report.json (the benchmark embedded),
# train.log. Extra arguments go to training.gpu_run (e.g. --set train.batch_size=128).
# tests/test_training_gpu_run.py rehearses this very script on CPU (PYTHON, BENCH_ARGS, OUT,
# BUDGET_S and gpu_run's arguments point it at a fake machine).
# Size (issue 11, item 3): GROW_WIDTH=H and GROW_LAYERS=N widen and deepen the start model first
# (function-preserving, training.run.grow; a start model that large already is continued as it
# is). Default 384 wide, 6 deep (13.5 M parameters, 2.6x the shipped 5.3 M): the most
# parameters per millisecond of typing on the 2-core dev CPU with int8 weights (VNNI).
# benchmarks/bench_sizes.py --dtypes int8, 1 thread, 2 rounds, p50 ratio to the shipped shape
# in one run: 384 x 6 1.41, 256 x 8 (8.4 M) 1.60, 384 x 8 (16.9 M) 1.70; on session 10's idle
# box (shipped p50 55.5 / p95 73 ms) 384 x 6 is ~78 / ~105 ms against p50 100 / p95 200.
# In fp32 (no VNNI, no bf16) even 8 x 256 measured p50 117-129 ms: GROW_WIDTH=0 GROW_LAYERS=0
# keeps the shipped shape. (benchmarks/README.md, "Model size").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/coda_gpu_out}
BUDGET_S=${BUDGET_S:-550}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
bench=$(mktemp /tmp/bench_training.XXXXXX.json)
BENCH_ARGS=${BENCH_ARGS:---device cuda --recipe default_model_gpu --steps 20}
GROW=(--grow-width "${GROW_WIDTH:-384}" --grow-layers "${GROW_LAYERS:-6}")
# The benchmark measures the shape the run will train (grown the same way).
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
timeout 90 "$PY" benchmarks/bench_training.py $BENCH_ARGS "${GROW[@]}" --json "$bench" \
    | tail -n 1 || echo "bench_training failed (the run goes on)"
left=$(( BUDGET_S - ($(date +%s) - start) ))
"$PY" -m training.gpu_run --out "$OUT" --budget-s "$left" --attach "bench=$bench" \
    "${GROW[@]}" "$@"
status=$?
rm -f "$bench"   # embedded in report.json by now
exit $status
