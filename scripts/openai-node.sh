#!/usr/bin/env bash
# Drives `cyclealign serve` with the official OpenAI Node client (npm openai): a tiny model
# given a ChatML chat template, served on loopback, checked by scripts/openai-node/check.mjs.
# Usage: scripts/openai-node.sh [BINARY]   (default: builds ./cmd/cyclealign). Needs node and npm.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
bin=${1:-}
if [ -z "$bin" ]; then
	bin="$work/cyclealign"
	(cd "$repo" && go build -o "$bin" ./cmd/cyclealign)
fi
(cd "$repo/scripts/openai-node" && npm ci --no-audit --no-fund --silent)
model="$work/chat-model"
cp -r "$repo/testdata/tiny-gpt2-bytelevel" "$model"
cat >"$model/tokenizer_config.json" <<'JSON'
{"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
 "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}
JSON
messages='[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]'
echo "$messages" >"$work/messages.json"
prompt_tokens=$("$bin" tokenize --model "$model" --chat "$work/messages.json" --add-generation-prompt --json |
	python3 -c 'import json, sys; print(len(json.load(sys.stdin)["ids"]))')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --model "$model" --name chat --addr "127.0.0.1:$port" --log-level warn &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v1/models" >/dev/null && break; sleep 0.1; done
BASE_URL="http://127.0.0.1:$port/v1" MODEL=chat PROMPT_TOKENS="$prompt_tokens" MESSAGES="$messages" \
	node "$repo/scripts/openai-node/check.mjs"
