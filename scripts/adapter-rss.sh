#!/usr/bin/env bash
# Measures what a resident LoRA adapter costs `serve`, and whether unloading frees it: RSS after
# warm-up, with four adapters resident, and after 30 load/unload cycles. Usage:
#   scripts/adapter-rss.sh [BINARY] [PORT]     (default: cyclealign on PATH, port 18090)
# Needs python3 (to write the adapter's safetensors) and curl; works in a temporary directory.
set -euo pipefail
BIN=$(realpath "$(command -v "${1:-cyclealign}")") PORT=${2:-18090}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); trap 'kill $PID 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
"$BIN" init-model --tokenizer "$repo/testdata/tiny-llama-metaspace" --out m --hidden 512 --layers 8 --heads 8 \
	--kv-heads 8 --intermediate 1408 --vocab 32000 --max-len 512 >/dev/null
python3 - <<'PY'
import json, os, random, struct
L, D, r = 8, 512, 8
os.makedirs("ad", exist_ok=True)
shapes = {}
for l in range(L):
    for mod in ("q_proj", "v_proj"):
        p = f"base_model.model.model.layers.{l}.self_attn.{mod}"
        shapes[p + ".lora_A.weight"], shapes[p + ".lora_B.weight"] = (r, D), (D, r)
rng, hdr, blobs, off = random.Random(1), {}, [], 0
for n, (a, b) in sorted(shapes.items()):
    data = struct.pack(f"<{a*b}f", *[rng.gauss(0, 0.02) for _ in range(a * b)])
    hdr[n] = {"dtype": "F32", "shape": [a, b], "data_offsets": [off, off + len(data)]}
    off += len(data); blobs.append(data)
h = json.dumps(hdr).encode()
with open("ad/adapter_model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
          open("ad/adapter_config.json", "w"))
PY
"$BIN" serve --model m --addr 127.0.0.1:$PORT --log-level warn 2>serve.log & PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:$PORT/v1/models >/dev/null && break; sleep 0.2; done
rss() { awk '/VmRSS/{print int($2/1024)}' /proc/$PID/status; }
post() { curl -sf 127.0.0.1:$PORT/v1/$1 -H 'content-type: application/json' -d "$2" >/dev/null; }
req() { post completions "{\"model\":\"$1\",\"prompt\":\"Hello\",\"max_tokens\":4}"; }
load() { post load_lora_adapter "{\"lora_name\":\"$1\",\"lora_path\":\"$work/ad\"}"; }
unload() { post unload_lora_adapter "{\"lora_name\":\"$1\"}"; }
req m; load w; req w; unload w; r0=$(rss)
for i in 1 2 3 4; do load r$i; req r$i; done; r4=$(rss)
for i in 1 2 3 4; do unload r$i; done
for i in $(seq 30); do load c$i; req c$i; unload c$i; done; r30=$(rss)
echo "warm ${r0} MB; four adapters resident ${r4} MB (+$(((r4 - r0) / 4)) MB each); after 30 load/unload cycles ${r30} MB (+$((r30 - r0)) MB)"
