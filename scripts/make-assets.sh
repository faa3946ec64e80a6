#!/usr/bin/env bash
# Regenerates the embedded default's models (internal/assets/models) from the embedded HH-RLHF
# sample: split (fixed seed), byte-level BPE tokenizer, base model pre-trained from scratch on
# the base split's dialogues (chosen and rejected), and two reward models on disjoint pairs:
# the judge (the offline black-box) and the evaluator (never seen during alignment).
# Every step is seeded; on this project's 2-core machine the whole script takes about 30 minutes.
# Usage: scripts/make-assets.sh [WORK_DIR]   (a WORK_DIR from an interrupted run is resumed)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
OUT=internal/assets/models
mkdir -p "$WORK"
go build -o "$WORK/cyclealign" ./cmd/cyclealign
C="$WORK/cyclealign"
$C data split --hh internal/assets/hh-rlhf/harmless-base-test.shared.jsonl.gz --out "$WORK/split"
$C tokenizer train --vocab-size 2048 --out "$WORK/tokenizer" "$WORK/split/base.jsonl"
$C pretrain --tokenizer "$WORK/tokenizer" --data "$WORK/split/base.jsonl" --out "$WORK/base" \
  --hidden 128 --layers 4 --heads 4 --kv-heads 2 --intermediate 352 --max-len 192 \
  --epochs 1 --batch-size 16 --lr 3e-3 --seed 1 --save-every 20
for rm in judge:2 evaluator:3; do
  name=${rm%%:*}; seed=${rm##*:}
  $C train-rm --base "$WORK/base" --data "$WORK/split/$name.jsonl" --eval-data "$WORK/split/test.jsonl" \
    --out "$WORK/$name" --max-len 192 --epochs 1 --batch-size 16 --lr 1e-3 --seed "$seed" --save-every 10
done
rm -rf "$OUT"
for m in base judge evaluator; do
  mkdir -p "$OUT/$m"
  cp "$WORK/$m"/{config.json,model.safetensors,tokenizer.json,metrics.jsonl} "$OUT/$m/"
  [ -f "$WORK/$m/rm_eval.json" ] && cp "$WORK/$m/rm_eval.json" "$OUT/$m/"
done
cat "$OUT"/judge/rm_eval.json "$OUT"/evaluator/rm_eval.json
