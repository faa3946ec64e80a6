#!/usr/bin/env bash
# cyclealign's CPU engine side by side with llama.cpp (the prebuilt CPU libraries of npm
# node-llama-cpp, pinned in scripts/llamacpp/), on the bench models converted to GGUF: both
# sizes, float32 and bfloat16 weights. Prints one table per model.
# Usage: scripts/llamacpp-bench.sh [BINARY]   (default: builds ./cmd/cyclealign). Needs node and npm.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
	bin=$(mktemp -d)/cyclealign
	(cd "$repo" && go build -o "$bin" ./cmd/cyclealign)
fi
# --ignore-scripts: the prebuilt libraries come with the package; its postinstall would build.
(cd "$repo/scripts/llamacpp" && npm ci --ignore-scripts --no-audit --no-fund --silent)
for size in 10m 100m; do
	for dtype in float32 bfloat16; do
		"$bin" bench --engines cpu --size "$size" --dtype "$dtype" --compare-llamacpp \
			--llamacpp-modules "$repo/scripts/llamacpp/node_modules" --log-level warn
	done
done
