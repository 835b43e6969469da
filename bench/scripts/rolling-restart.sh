#!/usr/bin/env bash
# The rolling-restart benchmark (cargo xtask rolling-restart): 3 providers, a caller
# calling them through Nacos at 200 (and 2) requests/s, every provider restarted twice, one
# at a time, the next 2 s after r-nacos lists the new one; at the defaults, with our
# gateway, a Java nacos-client 2.3.2 caller (push, no retry) and a Spring Cloud app at its
# defaults, SIGTERM and kill -9, the NACOS_DEREGISTER_GRACE=0s baseline, the former fixed
# 2 s grace and Spring's cache settings, side by side in one run. Writes the table to
# docs/bench-raw/rolling-restart.txt, the series to docs/bench-raw/rolling-*.csv and the
# plot to docs/rolling-restart.png (matplotlib, installed into a private venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
raw=docs/bench-raw
mkdir -p "$raw"
{
  echo "rolling restart, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) cores"
  cargo xtask rolling-restart "$raw"
} | tee "$raw/rolling-restart.txt"
venv=${ROLLING_VENV:-$HOME/.cache/nacos-dev/plot-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
"$venv/bin/python" bench/scripts/plot_rolling.py "$raw" docs/rolling-restart.png
