#!/usr/bin/env bash
# Runs every benchmark of the project and writes the results to docs/BENCHMARKS.md
# (the raw output of each part goes to docs/bench-raw/). About 30 minutes on 2 cores.
#
#   bench/run-all.sh            # everything
#   PARTS="scale lifecycle" bench/run-all.sh   # some parts: footprint lifecycle recovery
#                                              # scale peers overhead grpc
#
# Every comparison is measured side by side in one run: the peers alternate with our
# engine (ours, java, ours, python, ...), the overhead rounds alternate bare / with layer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
raw=docs/bench-raw
mkdir -p "$raw"
parts=${PARTS:-"footprint lifecycle recovery scale peers overhead grpc"}
has() { [[ " $parts " == *" $1 "* ]]; }

cargo xtask nacos install >/dev/null
cargo build -q --release -p nacos-bench --bins
bin=${CARGO_TARGET_DIR:-$root/target}/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if has footprint; then
  echo "== footprint" >&2
  bench/scripts/footprint.sh | tee "$raw/footprint.txt"
fi

if has lifecycle; then
  echo "== lifecycle (50 runs each, release)" >&2
  for demo in axum actix; do
    XTASK_RELEASE=1 cargo xtask timings "$demo" 50
  done | tee "$raw/lifecycle.txt"
fi

if has recovery; then
  echo "== recovery" >&2
  XTASK_RELEASE=1 cargo xtask recovery axum 5 | tee "$raw/recovery.txt"
fi

if has scale; then
  echo "== beat engine at scale: 10,000 instances, 120 s, local stub then r-nacos" >&2
  port=$(free_port)
  "$bin/beat-stub" "$port" 150 >"$raw/scale-stub-server.json" 2>/dev/null &
  stub=$!
  sleep 1
  "$bin/beat-load" "127.0.0.1:$port" 10000 120 >"$raw/scale-stub-client.json"
  wait "$stub"
  rn=$(mktemp -d)
  http=$(free_port)
  (cd "$rn" && RNACOS_HTTP_PORT=$http RNACOS_GRPC_PORT=$(free_port) RNACOS_HTTP_CONSOLE_PORT=$(free_port) \
    RNACOS_DATA_DIR="$rn/data" RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1 \
    exec "${RNACOS_BIN:-$HOME/.cache/nacos-dev/rnacos-0.8.8/bin/rnacos}" >/dev/null 2>&1) &
  rpid=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$http/nacos/v1/ns/service/list?pageNo=1&pageSize=1" 2>/dev/null && break; sleep 0.1; done
  "$bin/beat-load" "127.0.0.1:$http" 10000 120 >"$raw/scale-rnacos-client.json"
  kill "$rpid"; wait "$rpid" 2>/dev/null || true; rm -rf "$rn"
  cat "$raw"/scale-*.json
fi

if has peers; then
  echo "== peers: 1,000 instances, 60 s each, ours between each peer" >&2
  PEER_WARMUP=15 bench/peers/with-rnacos.sh 1000 60 \
    nacos-core java nacos-core python nacos-core node nacos-core rust-nacos-rust-client nacos-core \
    | tee "$raw/peers.txt"
fi

if has grpc; then
  echo "== gRPC transport: peers at 1,000 and 10,000, registration over 10 services, lifecycle" >&2
  PEER_WARMUP=15 bench/peers/with-rnacos.sh 1000 60 \
    nacos-core nacos-core-http rust-nacos-sdk nacos-core java2 nacos-core java nacos-core \
    | tee "$raw/grpc-peers-1000.txt"
  PEER_WARMUP=15 bench/peers/with-rnacos.sh 10000 60 nacos-core nacos-core-http rust-nacos-sdk \
    | tee "$raw/grpc-peers-10000.txt"
  PEER_SERVICES=10 bench/peers/with-rnacos.sh 1000 20 \
    nacos-core rust-nacos-sdk nacos-core-http nacos-core rust-nacos-sdk nacos-core rust-nacos-sdk \
    | tee "$raw/grpc-register-1000x10.txt"
  for _ in 1 2 3; do
    XTASK_RELEASE=1 cargo xtask timings axum 30
    NACOS_API=v1 XTASK_RELEASE=1 cargo xtask timings axum 30
  done | tee "$raw/grpc-lifecycle.txt"
fi

if has overhead; then
  echo "== request overhead: in-process, interleaved, then criterion, then wrk over loopback" >&2
  "$bin/overhead-interleaved" all 101 20000 | tee "$raw/overhead-inprocess.txt"
  cargo bench -q -p nacos-bench --bench overhead 2>/dev/null | grep -E 'time:|^[a-z_/-]+ ' | tee "$raw/overhead-criterion.txt" || true
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
  bench/scripts/overhead.sh 6 10 | tee "$raw/overhead-wrk.txt"
fi

{
  echo "# Raw results of bench/run-all.sh"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "- rustc: $(rustc --version)"
  echo "- git: $(git rev-parse --short HEAD)"
  for f in "$raw"/*; do
    [[ $(basename "$f") == README.md ]] && continue
    echo
    echo "## $(basename "$f")"
    echo
    echo '```'
    cat "$f"
    echo '```'
  done
} >"$raw/README.md"
echo "raw results in $raw/README.md; docs/BENCHMARKS.md quotes them" >&2
