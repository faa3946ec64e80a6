#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZTIME, default 20s each). Seeds live in each
# package's testdata/fuzz; a crasher found here is written there too, and `go test ./...`
# then replays it as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-20s}"
for target in hf:FuzzSafetensors hf:FuzzConfig tokenizer:FuzzTokenizerJSON tokenizer:FuzzEncode blackbox:FuzzParseRanking; do
	pkg="./internal/${target%%:*}" name="${target#*:}"
	echo "fuzz $pkg $name for $fuzztime"
	# Minimising each new input for the default 60 s would stall a short run.
	go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s
done
