#!/usr/bin/env bash
# Renders a run's HTML report in headless Chromium and saves a screenshot, to look at what
# `cyclealign report` shows. Needs Debian's chromium package (apt-get install chromium).
# Usage: scripts/screenshot-report.sh RUN_DIR [OUT.png]
set -euo pipefail
run=${1:?usage: $0 RUN_DIR [OUT.png]}
out=${2:-$run/report.png}
go run ./cmd/cyclealign report "$run" >/dev/null
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2600 \
  --screenshot="$out" "file://$(realpath "$run")/report.html" 2>/dev/null
echo "$out"
