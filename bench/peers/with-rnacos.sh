#!/usr/bin/env bash
# Start a throwaway r-nacos on free loopback ports, run ./run.sh against it
# (with its access log, so beats can be counted), then stop it.
#
#   bench/peers/with-rnacos.sh N SECONDS [PEER...]
#
# r-nacos binary: $RNACOS_BIN, default ${NACOS_DEV_CACHE:-$HOME/.cache/nacos-dev}/rnacos-0.8.8/bin/rnacos
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NACOS_DEV_CACHE:-$HOME/.cache/nacos-dev}
rnacos=${RNACOS_BIN:-$cache/rnacos-0.8.8/bin/rnacos}
[[ $# -ge 2 ]] || { echo "usage: $0 N SECONDS [PEER...]" >&2; exit 2; }
[[ -x $rnacos ]] || { echo "r-nacos binary not found: $rnacos" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A free HTTP port whose +1000 is free too (and below 65536): gRPC clients (ours,
# nacos-sdk, Java 2.x) derive the gRPC port as the HTTP port + 1000.
free_port_pair() {
  python3 -c '
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p + 1000 > 65535: a.close(); continue
    b = socket.socket()
    try: b.bind(("127.0.0.1", p + 1000))
    except OSError: a.close(); continue
    print(p); break
'
}

work=$(mktemp -d "${TMPDIR:-/tmp}/peerbench-rnacos.XXXXXX")
server_pid=
bench_pid=
cleanup() {
  if [[ -n $bench_pid ]]; then kill -TERM "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [[ -n ${KEEP_RNACOS_DIR:-} ]]; then echo "r-nacos dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts r-nacos on fresh ports with a fresh data dir and waits for its HTTP API. Then
# checks that a config written over HTTP reads back: r-nacos 0.8.8 sometimes panics at
# start-up in its raft apply actor (raftapply.rs:421, `unwrap()` on a `None`), after
# which it still answers, and acknowledges config writes, but never applies them. Returns
# 1 for such a server (stopped again).
start_server() {
  rm -rf "$work/data"
  http=$(free_port_pair); grpc=$((http + 1000)); console=$(free_port)
  [[ -n $http ]] || { echo "no free port pair (p, p+1000)" >&2; exit 1; }
  # All three ports are explicit; the gRPC port is the HTTP port + 1000, where clients look.
  (
    cd "$work"
    exec env RNACOS_HTTP_PORT="$http" RNACOS_GRPC_PORT="$grpc" RNACOS_HTTP_CONSOLE_PORT="$console" \
      RNACOS_DATA_DIR="$work/data" RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1 \
      RUST_LOG=info "$rnacos" >"$work/rnacos.log" 2>&1
  ) &
  server_pid=$!
  local base="http://127.0.0.1:$http/nacos/v1"
  for _ in $(seq 1 100); do
    curl -fsS --noproxy '*' -o /dev/null "$base/ns/instance/list?serviceName=probe" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/rnacos.log" >&2; exit 1; }
    sleep 0.1
  done
  local probe="peerbench-probe-$$" ok=0
  curl -fsS --noproxy '*' -o /dev/null -X POST "$base/cs/configs" \
    -d "dataId=$probe" -d group=DEFAULT_GROUP -d content=probe 2>/dev/null || true
  for _ in $(seq 1 20); do
    [[ $(curl -fsS --noproxy '*' "$base/cs/configs?dataId=$probe&group=DEFAULT_GROUP" 2>/dev/null) == probe ]] \
      && { ok=1; break; }
    sleep 0.1
  done
  curl -fsS --noproxy '*' -o /dev/null -X DELETE "$base/cs/configs?dataId=$probe&group=DEFAULT_GROUP" 2>/dev/null || true
  if (( ok )) && ! grep -q panicked "$work/rnacos.log"; then return 0; fi
  echo "r-nacos started broken (a config written does not read back; $(grep -m1 -A1 panicked "$work/rnacos.log" | tail -1)): starting it again" >&2
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true
  server_pid=
  return 1
}

for try in $(seq 1 10); do
  start_server && break
  (( try < 10 )) || { echo "r-nacos did not start right in 10 tries" >&2; exit 1; }
done
echo "r-nacos $($rnacos --version 2>/dev/null | head -1 || true) pid=$server_pid http=127.0.0.1:$http grpc=127.0.0.1:$grpc log=$work/rnacos.log" >&2

# In the background so that a signal reaches the trap at once; cleanup() passes it on.
NACOS_ACCESS_LOG="$work/rnacos.log" RNACOS_PID="$server_pid" "$here/run.sh" "127.0.0.1:$http" "$1" "$2" "${@:3}" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=
exit "$rc"
