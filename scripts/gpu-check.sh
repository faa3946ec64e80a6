#!/usr/bin/env bash
# GPU check, one command on a machine with one NVIDIA GPU: builds cyclealign with -tags xla, runs
# the engine's HF-reference tests on the GPU, and benchmarks scoring, KV-cache generation and a
# PRO training step on random-init LLaMA configs of ~100M and ~1B parameters, printing tokens/s
# and each step's peak GPU memory (nvidia-smi, sampled every 200 ms; XLA runs with
# preallocate=false, so the figure is what it allocated).
#
# Needs: Go and a C compiler (or prebuilt binaries, below), nvidia-smi, and a CUDA PJRT plugin:
# JAX's (pip install jax[cuda13]) is found by itself; else set PJRT_PLUGIN=/path/to/xla_cuda_plugin.so.
#   scripts/gpu-check.sh                 logs in ./gpu-check (or $OUT)
#   GPU_CHECK_BIN=DIR scripts/gpu-check.sh
#       uses DIR/{cyclealign,model.test,train.test}[.xz] built elsewhere with
#       CGO_ENABLED=1 go build -tags xla (a machine without Go).
#   GPU_CHECK_QUICK=1 skips the ~1B benchmarks.
#   GPU_CHECK_BUDGET=SECONDS caps the whole check: each step gets at most what is left, and a step
#       with under 20 s left is skipped (the summary says so), so a time-limited session still
#       brings back every finished step's log and summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
O=${OUT:-$ROOT/gpu-check}
mkdir -p "$O"
BIN=${GPU_CHECK_BIN:-}
if [ -z "$BIN" ]; then
  BIN=$(mktemp -d)
  echo "=== building with -tags xla"
  CGO_ENABLED=1 go build -tags xla -o "$BIN/cyclealign" ./cmd/cyclealign || exit 1
  CGO_ENABLED=1 go test -c -tags xla -o "$BIN/model.test" ./internal/model || exit 1
  CGO_ENABLED=1 go test -c -tags xla -o "$BIN/train.test" ./internal/train || exit 1
else
  T=$(mktemp -d)
  for f in cyclealign model.test train.test; do
    if [ -f "$BIN/$f.xz" ]; then xz -dc "$BIN/$f.xz" > "$T/$f"; else cp "$BIN/$f" "$T/$f"; fi
    chmod +x "$T/$f"
  done
  BIN=$T
fi
C=$BIN/cyclealign

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$O/gpu.txt"
PLUG=${PJRT_PLUGIN:-}
for py in python3 /usr/bin/python3; do
  [ -n "$PLUG" ] && break
  PLUG=$($py -c 'import os,jax_plugins.xla_cuda13 as m; print(os.path.join(os.path.dirname(m.__file__),"xla_cuda_plugin.so"))' 2>/dev/null ||
    $py -c 'import os,jax_plugins.xla_cuda12 as m; print(os.path.join(os.path.dirname(m.__file__),"xla_cuda_plugin.so"))' 2>/dev/null)
done
[ -f "$PLUG" ] || PLUG=$(find / -name 'xla_cuda_plugin.so' 2>/dev/null | head -1)
[ -f "$PLUG" ] || { echo "no CUDA PJRT plugin found: set PJRT_PLUGIN" >&2; exit 1; }
echo "PJRT plugin: $PLUG"
# An absolute plugin path skips GoMLX's auto-install (which needs the internet); go-xla's CUDA
# directory check is skipped for plugins outside its layout.
export GOMLX_NO_AUTO_INSTALL=1 GOPJRT_CUDA_CHECKS=0 GOMLX_BACKEND="xla:$PLUG" CYCLEALIGN_ENGINE=gomlx

nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$O/memory.log" 2>/dev/null &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT
SUMMARY=$O/summary.txt
: > "$SUMMARY"
# step NAME SECONDS DIR CMD...: runs CMD in DIR with a time limit, keeps its log, and notes its
# exit status, wall time and the peak GPU memory sampled while it ran.
START=$(date +%s)
step() {
  local name=$1 limit=$2 dir=$3
  shift 3
  if [ -n "${GPU_CHECK_BUDGET:-}" ]; then
    local left=$((GPU_CHECK_BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
      printf '%-22s skipped: the budget is spent\n' "$name" | tee -a "$SUMMARY"
      return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  local from t0 rc
  from=$(wc -l < "$O/memory.log")
  t0=$(date +%s)
  echo "=== $name"
  (cd "$dir" && timeout "$limit" "$@") > "$O/$name.log" 2>&1
  rc=$?
  sleep 0.5
  local peak
  peak=$(tail -n +"$((from + 1))" "$O/memory.log" | sort -n | tail -1)
  printf '%-22s rc=%-3s %4ss  peak GPU memory %s MiB\n' "$name" "$rc" "$(($(date +%s) - t0))" "${peak:-?}" | tee -a "$SUMMARY"
  grep -vE '^\s+/|^goroutine|^time=' "$O/$name.log" | tail -25
}

# The reference tests compare float32 results with HF's to 1e-4: XLA on NVIDIA GPUs computes
# float32 matrix products in TF32 unless told otherwise (the benchmarks below keep TF32).
REF_ENV=(NVIDIA_TF32_OVERRIDE=0 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false)
step hf-reference-model 90 internal/model env "${REF_ENV[@]}" "$BIN/model.test" -test.v
step hf-reference-train 90 internal/train env "${REF_ENV[@]}" "$BIN/train.test" -test.v \
  -test.run 'GraphLossMatchesReference|FiniteDifferences$|FastGradientEqualsStock|AccumulationEqualsLargeBatch|LossesFall'
step bench-100m 100 . "$C" bench --size 100m --engines gomlx
step bench-100m-train 100 . "$C" bench --train --size 100m --engines gomlx
if [ -z "${GPU_CHECK_QUICK:-}" ]; then
  # ~1.1B: Llama-like widths (TinyLlama's: 2048 hidden, 22 layers, 32/4 heads, 5632 MLP, 32000 vocab).
  B1=(--hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 --tied=false)
  step bench-1b 120 . "$C" bench "${B1[@]}" --engines gomlx
  step bench-1b-train 110 . "$C" bench --train "${B1[@]}" --engines gomlx
  # A short CycleAlign run with LoRA on the ~1B config (random init, the embedded default's
  # tokenizer, the offline lexicon judge): each step's wall time by phase is in metrics.jsonl.
  W=$(mktemp -d)
  step init-1b 120 . "$C" init-model --tokenizer internal/assets/models/base --out "$W/m1b" \
    --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 --untied
  step align-1b-lora 240 . "$C" align --model "$W/m1b" --prompts internal/assets/hh-rlhf/harmless-base-test.shared.jsonl.gz \
    --lexicon-judge harmless --lora-r 16 --steps 3 --batch-size 8 --n 4 --max-new-tokens 64 --out "$W/run"
  cp "$W/run/metrics.jsonl" "$O/align-1b-lora.metrics.jsonl" 2>/dev/null &&
    grep -o '"step":[0-9]*\|"seconds":[0-9.]*\|"sample_s":[0-9.]*\|"score_s":[0-9.]*\|"blackbox_s":[0-9.]*\|"train_s":[0-9.]*\|"tokens_per_s":[0-9.]*' \
      "$O/align-1b-lora.metrics.jsonl" | paste -sd' ' | sed 's/"step"/\n"step"/g' | tee -a "$SUMMARY"
fi
echo "=== summary ($O/summary.txt)"
cat "$SUMMARY"
