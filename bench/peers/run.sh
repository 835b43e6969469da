#!/usr/bin/env bash
# Peer clients under the same beat load as our engine (issue 5).
#
#   bench/peers/run.sh SERVER_ADDR N SECONDS [PEER...]
#
# PEER is any of: nacos-core nacos-core-nocheck nacos-core-http java java2 python node
# rust-nacos-rust-client rust-nacos-sdk (default: all, in that order, one at a time), or
# one of the configuration-center peers nacos-core-config rust-nacos-sdk-config (see
# "Config mode" below; never part of the default list).
# nacos-core is our engine with its default API (gRPC on r-nacos and Nacos 2.x/3.x),
# nacos-core-nocheck the same with NACOS_INSTANCE_CHECK=false (its own services not
# watched), nacos-core-http the same binary with PEER_API=v1 (HTTP beats); java is nacos-client
# 1.4.8 (HTTP beats), java2 nacos-client 2.3.2 (gRPC, batchRegisterInstance). For each peer: set up its environment (cached
# under ${NACOS_DEV_CACHE:-$HOME/.cache/nacos-dev}/peers/), start its runner
# with `SERVER_ADDR N WARMUP+SECONDS+GRACE PREFIX`, wait for `ready <n>`, wait
# WARMUP (default 0), sample /proc/<pid>/{stat,status}, sleep SECONDS, sample
# again, check the server's instance list, stop the runner (SIGTERM), and
# print one line:
#
#   peer=<name> version=<x> instances=<n> seconds=<s> cpu_percent_of_one_core=<..>
#   rss_mb=<..> peak_rss_mb=<..> beats_seen=<..|-> [extra key=value ...]
#
# cpu_percent_of_one_core = 100 * delta(utime+stime of the whole process, all
# threads) / wall time, over [ready+WARMUP, ready+WARMUP+SECONDS]. rss_mb is VmRSS at the end,
# peak_rss_mb is VmHWM at the end (whole-process high-water mark, so it includes
# start-up and registration).
#
# Extras: beat_interval_s (N*wall/beats_seen, the mean interval per instance),
# listed_at_ready / healthy_at_end (counted in the server's v1 instance list),
# threads, tcp_established / tcp_time_wait (to the server port, at the end;
# see tcp_counts), startup_cpu_s (process CPU until `ready`: runtime
# start-up plus N registrations), rss_mb_at_ready, server_cpu_percent (if
# RNACOS_PID is set), tcp_established_grpc (client sockets to the server port
# + 1000, the gRPC port), registered_ms (printed by the runner: first registration
# request to all registered), warmup_s, host_busy_percent (whole machine, all cores,
# over the window: anything else running skews the figures) and host_cores.
#
# Environment:
#   NACOS_ACCESS_LOG  server log holding one access-log line per request (r-nacos
#                     with RUST_LOG=info does this); beats_seen counts the
#                     "PUT /nacos/v1/ns/instance/beat" lines written during the
#                     window. Without it beats_seen is "-". with-rnacos.sh sets it.
#   RNACOS_PID        server pid, to report its CPU over the same window.
#   JAVA_OPTS         extra JVM options for the Java peer (default: none, i.e.
#                     JVM defaults; heap ergonomics follow the machine's RAM).
#   PEER_WARMUP       seconds to wait after `ready` before the window opens
#                     (default 0: the window starts at `ready`).
#   PEER_GRACE        extra seconds the runner is told to live (default 10).
#   PEER_PAUSE        seconds to wait between peers (default 5).
#   PEER_KEEP_RUNDIR  keep each runner's temp dir (stdout/stderr) if set.
#   PEER_SERVICES     spread the N instances round-robin over this many services
#                     (default 1; <prefix>-<peer>-<k> when > 1). Supported by the
#                     nacos-core, java and rust-nacos-sdk runners.
#   JAVA2_VERSION     nacos-client version of the java2 peer (default 2.3.2).
#   PEER_METADATA     key=value: one metadata entry on every instance of the
#                     rust-nacos-sdk runner (ours always carry
#                     preserved.register.source=RUST_NACOS).
#
# Config mode (peers nacos-core-config, rust-nacos-sdk-config): N is the number of
# configs. Before the runner starts, N configs <prefix>-<i>.properties (group
# DEFAULT_GROUP, namespace public, about 200 bytes of properties each) are published
# with one curl over the server's v1 HTTP API (POST /nacos/v1/cs/configs). The runner
# listens to all of them and prints `ready <n>` once every one has its content. At
# PEER_CONFIG_CHANGE_AT seconds into the window (default SECONDS/2), PEER_CONFIG_CHANGES
# (default 10) of them, evenly spread, are changed, one curl each, and the runner's
# `changed <data id> <unix ms>` lines are matched against the publish times. After the
# runner is stopped the N configs are deleted. The line has configs=<n> instead of
# instances=<n>, no beats or instance counts, and: ready_ms (printed by the runner: until
# every config has content), ready_with_content, changes_seen (changed configs notified
# by the window's end), change_latency_ms_median / _max (curl start of the publish to the
# runner's notification), notifications (all `changed` lines, duplicates and spurious ones
# included), config_queries / config_listens (ConfigQueryRequest /
# ConfigBatchListenRequest lines in the server's log: start-to-ready/warm-up/window; needs
# NACOS_ACCESS_LOG, an r-nacos log at RUST_LOG=info, which logs every config request) and
# publish_s (the N publications, before the runner starts), then any other key=value
# line the runner printed (ours: heap_kb_base, heap_kb_at_ready, heap_kb and the same
# in blocks).
#   PEER_CONFIG_CHANGES   configs changed in the window (default 10, 0: none).
#   PEER_CONFIG_CHANGE_AT seconds into the window of the changes (default SECONDS/2).
#   PEER_CONFIG_SNAPSHOT  nacos-core-config's snapshot dir (default ./nacos-snapshot, in
#                         the run dir; off: none).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NACOS_DEV_CACHE:-$HOME/.cache/nacos-dev}/peers
all_peers=(nacos-core nacos-core-nocheck nacos-core-http java java2 python node rust-nacos-rust-client rust-nacos-sdk)
config_peers=(nacos-core-config rust-nacos-sdk-config)

usage() { echo "usage: $0 SERVER_ADDR N SECONDS [PEER...]   (peers: ${all_peers[*]} ${config_peers[*]})" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
server=$1 n=$2 seconds=$3
shift 3
peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=("${all_peers[@]}")
[[ $n =~ ^[1-9][0-9]*$ && $seconds =~ ^[1-9][0-9]*$ ]] || usage
[[ ${PEER_WARMUP:-0} =~ ^[0-9]+$ && ${PEER_GRACE:-10} =~ ^[0-9]+$ ]] || usage
warmup=${PEER_WARMUP:-0}
grace=${PEER_GRACE:-10}
pause=${PEER_PAUSE:-5}
services=${PEER_SERVICES:-1}
[[ $services =~ ^[1-9][0-9]*$ ]] && (( services <= n )) || usage
export PEER_SERVICES=$services
config_changes=${PEER_CONFIG_CHANGES:-10}
config_change_at=${PEER_CONFIG_CHANGE_AT:-$((seconds / 2))}
[[ $config_changes =~ ^[0-9]+$ && $config_change_at =~ ^[0-9]+$ ]] || usage
case " ${peers[*]} " in
  *-config\ *) (( config_changes <= n && config_change_at <= seconds )) || usage ;;
esac

# The runners must only ever talk to this loopback server.
host=${server%:*}
case $host in
  127.*|localhost|'[::1]') ;;
  *) echo "refusing non-loopback server address: $server" >&2; exit 2 ;;
esac
# No proxies anywhere: urllib (Python), reqwest (Rust) honour *_proxy variables.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY='*' no_proxy='*'

(( seconds >= 20 )) || echo "note: SECONDS=$seconds < 20; instances are not checked past the 15 s unhealthy mark" >&2

clk_tck=$(getconf CLK_TCK)
log() { echo "[run.sh] $*" >&2; }
now() { date +%s.%N; }

# Cache key: hash of stdin.
key_of() { sha256sum | cut -c1-16; }

# ---- per-peer set-up: each sets peer_version and peer_cmd (an array) --------
# (They run as `if ! setup_x`, where set -e is off: every step checks itself.)

setup_nacos-core() {
  # This project's engine, built from the working tree (release).
  local root; root=$(cd "$here/../.." && pwd)
  (cd "$root" && cargo build -q --release -p nacos-bench --bin peer-nacos-core) || return 1
  peer_version="nacos-core:$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
  peer_cmd=(env PEER_API="${PEER_API:-auto}" PEER_NAME=nacos-core "${CARGO_TARGET_DIR:-$root/target}/release/peer-nacos-core")
}

setup_nacos-core-nocheck() {
  # The same binary with NACOS_INSTANCE_CHECK=false: its own service not watched.
  setup_nacos-core || return 1
  peer_version+="/nocheck"
  peer_cmd=(env PEER_INSTANCE_CHECK=false PEER_API="${PEER_API:-auto}" PEER_NAME=nacos-core-nocheck "${peer_cmd[@]:3}")
}

setup_nacos-core-http() {
  # The same binary on the v1 HTTP API (beats every 5 s).
  PEER_API=v1 setup_nacos-core || return 1
  peer_version+="/v1"
  peer_cmd=(env PEER_API=v1 PEER_NAME=nacos-core-http "${peer_cmd[@]:3}")
}

setup_nacos-core-config() {
  # Our configuration center (ConfigService::watch), built from the working tree (release).
  local root; root=$(cd "$here/../.." && pwd)
  (cd "$root" && cargo build -q --release -p nacos-bench --bin peer-nacos-core-config) || return 1
  peer_version="nacos-core:$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
  peer_cmd=("${CARGO_TARGET_DIR:-$root/target}/release/peer-nacos-core-config")
}

# build_java VERSION MODE PEER: the runner against nacos-client VERSION (the pom's
# nacos.client.version property, default 1.4.8), MODE single|batch.
build_java() {
  local version=$1 mode=$2 name=$3
  local src=$here/java
  local key; key=$({ cat "$src/pom.xml" "$src/src/main/java/peerbench/Runner.java"; echo "$version"; java -version 2>&1; } | key_of)
  local build=$cache/java/build-$key
  if [[ ! -f $build/.built ]]; then
    command -v mvn >/dev/null && command -v java >/dev/null || { log "java peer needs mvn and java"; return 1; }
    log "$name: building runner against nacos-client ${version:-(pom default)} in $build (Maven repo $cache/java/m2)"
    rm -rf "$build"; mkdir -p "$build"
    cp -r "$src/pom.xml" "$src/src" "$build/" || return 1
    local vopt=(); [[ -z $version ]] || vopt=("-Dnacos.client.version=$version")
    (cd "$build" && mvn -B -q -Dmaven.repo.local="$cache/java/m2" "${vopt[@]}" package) >"$build/build.log" 2>&1 \
      || { tail -30 "$build/build.log" >&2; return 1; }
    touch "$build/.built"
  fi
  local jar; jar=$(ls "$build"/target/lib/nacos-client-*.jar)
  jar=${jar##*/nacos-client-}
  peer_version="com.alibaba.nacos:nacos-client:${jar%.jar}"
  # user.home points the client's cache/failover/log dirs (~/nacos, ~/logs) at the run dir.
  # shellcheck disable=SC2206
  peer_cmd=(java ${JAVA_OPTS:-} -Duser.home="@RUNDIR@/home" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
            -Dpeerbench.peer="$name" -Dpeerbench.register="$mode"
            -cp "$build/target/classes:$build/target/lib/*" peerbench.Runner)
}

setup_java() { build_java "" single java; }
# nacos-client 2.x over gRPC holds one instance per service per client:
# batchRegisterInstance registers the N instances of a service in one call.
setup_java2() { build_java "${JAVA2_VERSION:-2.3.2}" batch java2; }

setup_python() {
  local src=$here/python
  local key; key=$({ cat "$src/requirements.txt"; python3 -c 'import sys; print(sys.version)'; } | key_of)
  local venv=$cache/python/venv-$key
  if [[ ! -f $venv/.built ]]; then
    log "python: creating venv $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$src/requirements.txt" >"$venv.log" 2>&1 \
      || { tail -30 "$venv.log" >&2; return 1; }
    touch "$venv/.built"
  fi
  peer_version="nacos-sdk-python:$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("nacos-sdk-python"))')"
  peer_version+="/python-$("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  peer_cmd=("$venv/bin/python" "$src/runner.py")
}

setup_node() {
  local src=$here/node
  local key; key=$({ cat "$src/package.json" "$src/package-lock.json" "$src/runner.js"; node --version; } | key_of)
  local dir=$cache/node/install-$key
  if [[ ! -f $dir/.built ]]; then
    log "node: npm ci into $dir"
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$src/runner.js" "$dir/" || return 1
    (cd "$dir" && npm ci --no-audit --no-fund) >"$dir/install.log" 2>&1 \
      || { tail -30 "$dir/install.log" >&2; return 1; }
    touch "$dir/.built"
  fi
  local v1 v2
  v1=$(node -p 'require(process.argv[1]).version' "$dir/node_modules/nacos/package.json")
  v2=$(node -p 'require(process.argv[1]).version' "$dir/node_modules/nacos-naming/package.json")
  peer_version="nacos:$v1/nacos-naming:$v2/node-$(node --version)"
  peer_cmd=(node "$dir/runner.js")
}

setup_rust-nacos-rust-client() {
  local src=$here/rust-nacos-rust-client
  local target=$cache/rust-nacos-rust-client/target
  log "rust-nacos-rust-client: cargo build --release (target dir $target)"
  cargo build -q --release --locked --manifest-path "$src/Cargo.toml" --target-dir "$target" \
    >"$cache/rust-nacos-rust-client/build.log" 2>&1 \
    || { tail -30 "$cache/rust-nacos-rust-client/build.log" >&2; return 1; }
  local v
  v=$(awk '/^name = "nacos_rust_client"$/ {getline; gsub(/"/, "", $3); print $3}' "$src/Cargo.lock")
  peer_version="nacos_rust_client:$v/$(rustc --version | cut -d' ' -f1-2 | tr ' ' '-')"
  peer_cmd=("$target/release/nacos-rust-client-peer")
}

setup_rust-nacos-sdk() {
  local src=$here/rust-nacos-sdk
  local target=$cache/rust-nacos-sdk/target
  log "rust-nacos-sdk: cargo build --release (target dir $target)"
  cargo build -q --release --locked --manifest-path "$src/Cargo.toml" --target-dir "$target" \
    >"$cache/rust-nacos-sdk/build.log" 2>&1 \
    || { tail -30 "$cache/rust-nacos-sdk/build.log" >&2; return 1; }
  local v
  v=$(awk '/^name = "nacos-sdk"$/ {getline; gsub(/"/, "", $3); print $3}' "$src/Cargo.lock")
  peer_version="nacos-sdk:$v/$(rustc --version | cut -d' ' -f1-2 | tr ' ' '-')"
  peer_cmd=("$target/release/nacos-sdk-peer")
}

setup_rust-nacos-sdk-config() {
  # The same crate's second binary: ConfigService::add_listener.
  mkdir -p "$cache/rust-nacos-sdk"
  setup_rust-nacos-sdk || return 1
  peer_cmd=("$cache/rust-nacos-sdk/target/release/nacos-sdk-config-peer")
}

# ---- sampling -----------------------------------------------------------------

# utime+stime in clock ticks for the whole thread group.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb / 1024}'; }
pct() { awk -v t="$1" -v hz="$clk_tck" -v w="$2" 'BEGIN {printf "%.2f", 100 * t / hz / w}'; }
log_size() { if [[ -n ${NACOS_ACCESS_LOG:-} ]]; then stat -c %s "$NACOS_ACCESS_LOG"; else echo 0; fi; }

# Whole machine, all cores: "<busy ticks> <total ticks>" (noise indicator).
host_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# TCP connections to the server port: "<established> <time-wait>". Established
# counts client-side sockets only; TIME-WAIT counts either side and, as Linux
# keeps TIME-WAIT for 60 s, approximates connections closed in the last minute
# (with WARMUP+SECONDS < 60 + PEER_PAUSE that includes the previous peer's).
tcp_counts() {
  local p=${server##*:}
  echo "$(ss -Htan state established "( dport = :$p )" 2>/dev/null | wc -l)" \
       "$(ss -Htan state time-wait "( sport = :$p or dport = :$p )" 2>/dev/null | wc -l)" \
       "$(ss -Htan state established "( dport = :$((p + 1000)) )" 2>/dev/null | wc -l)"
}

# Instances of one service $1 on the server: "<listed> <healthy>".
service_counts() {
  curl -fsS --max-time 10 "http://$server/nacos/v1/ns/instance/list?serviceName=$1&healthyOnly=false" \
    | jq -r '[(.hosts | length), ([.hosts[] | select(.healthy)] | length)] | "\(.[0]) \(.[1])"' \
    2>/dev/null || echo "? ?"
}
# Instances of a peer's service(s) $1 (<prefix>-<peer>), summed over PEER_SERVICES.
server_counts() {
  (( services > 1 )) || { service_counts "$1"; return; }
  local k l h tl=0 th=0
  for ((k = 0; k < services; k++)); do
    read -r l h < <(service_counts "$1-$k")
    [[ $l =~ ^[0-9]+$ && $h =~ ^[0-9]+$ ]] || { echo "? ?"; return; }
    tl=$((tl + l)) th=$((th + h))
  done
  echo "$tl $th"
}

# ---- config mode ----------------------------------------------------------------

unix_ms() { date +%s%3N; }

# One curl config-file section publishing config $2 of prefix $1 at revision $3: about
# 200 bytes of properties (the \n are curl's escapes, sent as newlines).
config_section() {
  printf 'url = "http://%s/nacos/v1/cs/configs"\n' "$server"
  printf 'data = "dataId=%s-%s.properties&group=DEFAULT_GROUP&type=properties"\n' "$1" "$2"
  printf 'data-urlencode = "content=# peerbench config %s, revision %s\\n' "$2" "$3"
  printf 'app.name=peerbench\\napp.instance=%s\\nserver.port=8080\\n' "$2"
  printf 'feature.flags=alpha,beta,gamma\\ndatasource.url=jdbc:mysql://127.0.0.1:3306/peerbench\\n'
  printf 'datasource.pool.max=20\\ncache.ttl.seconds=300\\nrevision=%s\\n"\n' "$3"
}

# Runs the curl config on stdin (one request per section, one connection) and checks that
# the server answered `true` $1 times.
curl_configs() {
  local want=$1 got
  got=$(curl -sS --max-time 300 -K - | grep -o true | wc -l)
  [[ $got == "$want" ]] || { log "config requests: $got of $want answered true"; return 1; }
}

# Publishes the configs 0..N-1 of prefix $1 (revision 0).
publish_configs() {
  local i
  for ((i = 0; i < n; i++)); do
    (( i == 0 )) || echo next
    config_section "$1" "$i" 0
  done | curl_configs "$n"
}

# Deletes the configs 0..N-1 of prefix $1.
delete_configs() {
  local i
  for ((i = 0; i < n; i++)); do
    (( i == 0 )) || echo next
    printf 'request = "DELETE"\nurl = "http://%s/nacos/v1/cs/configs?dataId=%s-%s.properties&group=DEFAULT_GROUP"\n' \
      "$server" "$1" "$i"
  done | curl_configs "$n" || true
}

# Changes PEER_CONFIG_CHANGES configs of prefix $1, evenly spread, one curl each, and
# appends "<data id> <unix ms before its curl>" to the file $2.
change_configs() {
  local k i t
  for ((k = 0; k < config_changes; k++)); do
    i=$((k * n / config_changes))
    t=$(unix_ms)
    config_section "$1" "$i" 1 | curl_configs 1 || true
    echo "$1-$i.properties $t" >>"$2"
  done
}

# "<seen> <median ms> <max ms> <notifications>": the changes of the file $1 ("<data id>
# <publish ms>") that the runner's stdout $2 notified ("changed <data id> <ms>"), with the
# latency of each one's first notification; notifications counts every `changed` line.
change_stats() {
  local lat seen median max total
  lat=$(awk 'NR == FNR {pub[$1] = $2; next}
             $1 == "changed" && ($2 in pub) && !($2 in seen) && $3 >= pub[$2] {seen[$2] = 1; print $3 - pub[$2]}' \
        "$1" "$2" | sort -n)
  total=$(grep -c '^changed ' "$2" || true)
  if [[ -z $lat ]]; then echo "0 - - $total"; return; fi
  seen=$(wc -l <<<"$lat")
  median=$(awk '{v[NR] = $1} END {printf "%d", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}' <<<"$lat")
  max=$(tail -1 <<<"$lat")
  echo "$seen $median $max $total"
}

# Lines of the server's log between the byte offsets $1 and $2 that hold the fixed string $3.
log_count() {
  [[ -n ${NACOS_ACCESS_LOG:-} ]] || { echo -; return; }
  tail -c "+$(($1 + 1))" "$NACOS_ACCESS_LOG" | head -c "$(($2 - $1))" | grep -cF -- "$3" || true
}

runner_pid=
# SIGTERM, up to 10 s, then SIGKILL; only ever the runner this script started.
stop_runner() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  runner_pid=
}
# Long waits run as `sleep & wait` so that a signal to this script is handled
# at once rather than after the sleep.
sleep_pid=
nap() { sleep "$1" & sleep_pid=$!; wait "$sleep_pid"; sleep_pid=; }
live_rundir=
on_exit() {
  [[ -z $sleep_pid ]] || kill "$sleep_pid" 2>/dev/null || true
  [[ -z $runner_pid ]] || stop_runner "$runner_pid"
  [[ -z $live_rundir || -n ${PEER_KEEP_RUNDIR:-} ]] || rm -rf "$live_rundir"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

run_peer() {
  local peer=$1
  peer_version=- peer_cmd=()
  # The -config peers run in config mode: N configs listened to instead of N instances.
  local peer_kind=instances config=0
  [[ $peer != *-config ]] || peer_kind=configs config=1
  mkdir -p "$cache/$peer"
  if ! "setup_$peer"; then
    echo "peer=$peer version=- $peer_kind=$n seconds=$seconds error=setup_failed"
    return 1
  fi

  local rundir; rundir=$(mktemp -d "${TMPDIR:-/tmp}/peerbench-$peer.XXXXXX")
  live_rundir=$rundir  # removed if we are interrupted; kept on a runner failure
  mkdir -p "$rundir/home"
  local prefix="peerbench-$(date +%s)-$$"
  local service="$prefix-$peer"
  local cmd=("${peer_cmd[@]//@RUNDIR@/$rundir}" "$server" "$n" "$((warmup + seconds + grace))" "$prefix")
  local publish_s=-
  if (( config )); then
    local tp; tp=$(now)
    if ! publish_configs "$prefix"; then
      delete_configs "$prefix"; rm -rf "$rundir"; live_rundir=
      echo "peer=$peer version=$peer_version configs=$n seconds=$seconds error=publish_failed"
      return 1
    fi
    publish_s=$(awk -v a="$tp" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}')
    log "$peer: $n configs $prefix-<i>.properties published in $publish_s s"
  fi
  log "$peer: starting ${cmd[*]}"
  local l_start; l_start=$(log_size)
  local t_start; t_start=$(now)
  (cd "$rundir" && exec "${cmd[@]}") >"$rundir/stdout" 2>"$rundir/stderr" &
  local pid=$!
  runner_pid=$pid

  local deadline=$((SECONDS + 300))
  until grep -q '^ready ' "$rundir/stdout" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || (( SECONDS > deadline )); then
      log "$peer: no 'ready' (see $rundir)"; tail -20 "$rundir/stderr" >&2
      stop_runner "$pid"; live_rundir=
      (( ! config )) || delete_configs "$prefix"
      echo "peer=$peer version=$peer_version $peer_kind=$n seconds=$seconds error=not_ready"
      return 1
    fi
    sleep 0.05
  done
  local t_ready; t_ready=$(now)
  local l_ready; l_ready=$(log_size)
  local startup; startup=$(awk -v t="$(cpu_ticks "$pid")" -v hz="$clk_tck" 'BEGIN {printf "%.2f", t / hz}')
  local r0; r0=$(status_kb "$pid" VmRSS)
  local ready_line; ready_line=$(grep -m1 '^ready ' "$rundir/stdout")
  local at_ready="- -"
  (( config )) || at_ready=$(server_counts "$service")
  log "$peer: $ready_line after $(awk -v a="$t_start" -v b="$t_ready" 'BEGIN {printf "%.1f", b - a}') s; server lists/healthy: $at_ready"
  (( warmup == 0 )) || nap "$warmup"
  # Window start.
  local t0 c0 l0 s0=0 hb0 ht0
  t0=$(now); c0=$(cpu_ticks "$pid"); l0=$(log_size)
  [[ -z ${RNACOS_PID:-} ]] || s0=$(cpu_ticks "$RNACOS_PID")
  read -r hb0 ht0 < <(host_ticks)

  local changes=$rundir/changes; : >"$changes"
  if (( config && config_changes > 0 )); then
    nap "$(awk -v t0="$t0" -v now="$(now)" -v s="$config_change_at" 'BEGIN {d = t0 + s - now; printf "%.3f", (d > 0 ? d : 0)}')"
    change_configs "$prefix" "$changes"
    log "$peer: $config_changes configs changed"
  fi
  nap "$(awk -v t0="$t0" -v now="$(now)" -v s="$seconds" 'BEGIN {d = t0 + s - now; printf "%.3f", (d > 0 ? d : 0)}')"

  # Window end.
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$peer: runner exited early (see $rundir)"; tail -20 "$rundir/stderr" >&2
    runner_pid= live_rundir=
    (( ! config )) || delete_configs "$prefix"
    echo "peer=$peer version=$peer_version $peer_kind=$n seconds=$seconds error=exited_early"
    return 1
  fi
  local t1 c1 r1 h1 th l1 s1=0
  t1=$(now); c1=$(cpu_ticks "$pid"); r1=$(status_kb "$pid" VmRSS); h1=$(status_kb "$pid" VmHWM)
  th=$(status_kb "$pid" Threads); l1=$(log_size)
  [[ -z ${RNACOS_PID:-} ]] || s1=$(cpu_ticks "$RNACOS_PID")
  local hb1 ht1; read -r hb1 ht1 < <(host_ticks)
  local estab tw estab_grpc; read -r estab tw estab_grpc < <(tcp_counts)
  local at_end="- -"
  (( config )) || at_end=$(server_counts "$service")
  local change_seen=- change_median=- change_max=- notifications=-
  (( ! config )) || read -r change_seen change_median change_max notifications < <(change_stats "$changes" "$rundir/stdout")

  stop_runner "$pid"
  (( ! config )) || delete_configs "$prefix"

  local wall; wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  local beats=- interval=-
  if [[ -n ${NACOS_ACCESS_LOG:-} ]]; then
    beats=$(tail -c "+$((l0 + 1))" "$NACOS_ACCESS_LOG" | head -c "$((l1 - l0))" \
      | grep -c 'PUT /nacos/v1/ns/instance/beat' || true)
    (( beats > 0 )) && interval=$(awk -v n="$n" -v w="$wall" -v b="$beats" 'BEGIN {printf "%.2f", n * w / b}')
  fi
  local line="peer=$peer version=$peer_version $peer_kind=$n seconds=$seconds"
  line+=" cpu_percent_of_one_core=$(pct "$((c1 - c0))" "$wall")"
  if (( config )); then
    line+=" rss_mb=$(mb "$r1") peak_rss_mb=$(mb "$h1")"
    local ready_ms; ready_ms=$(sed -n 's/^ready_ms=\([0-9]*\)$/\1/p' "$rundir/stdout" | head -1)
    line+=" ready_ms=${ready_ms:--} ready_with_content=${ready_line#ready }/$n"
    line+=" changes_seen=$change_seen/$config_changes change_latency_ms_median=$change_median"
    line+=" change_latency_ms_max=$change_max notifications=$notifications"
    line+=" config_queries=$(log_count "$l_start" "$l_ready" '|ConfigQueryRequest|')"
    line+="/$(log_count "$l_ready" "$l0" '|ConfigQueryRequest|')/$(log_count "$l0" "$l1" '|ConfigQueryRequest|')"
    line+=" config_listens=$(log_count "$l_start" "$l_ready" '|ConfigBatchListenRequest|')"
    line+="/$(log_count "$l_ready" "$l0" '|ConfigBatchListenRequest|')/$(log_count "$l0" "$l1" '|ConfigBatchListenRequest|')"
    line+=" threads=$th tcp_established=$estab tcp_established_grpc=$estab_grpc publish_s=$publish_s"
    # Any other key=value line of the runner (ours: heap_kb=, heap_blocks=, ...).
    local extra
    for extra in $(grep -E '^[a-z_]+=[^ ]+$' "$rundir/stdout" | grep -v '^ready_ms='); do line+=" $extra"; done
  else
    line+=" rss_mb=$(mb "$r1") peak_rss_mb=$(mb "$h1") beats_seen=$beats"
    line+=" beat_interval_s=$interval listed_at_ready=${at_ready%% *}/$n healthy_at_end=${at_end##* }/$n"
    line+=" threads=$th tcp_established=$estab tcp_time_wait=$tw tcp_established_grpc=$estab_grpc"
    local reg_ms; reg_ms=$(sed -n 's/^registered_ms=\([0-9]*\)$/\1/p' "$rundir/stdout" | head -1)
    line+=" registered_ms=${reg_ms:--} services=$services"
  fi
  line+=" startup_cpu_s=$startup rss_mb_at_ready=$(mb "$r0")"
  [[ -z ${RNACOS_PID:-} ]] || line+=" server_cpu_percent=$(pct "$((s1 - s0))" "$wall")"
  line+=" warmup_s=$warmup host_busy_percent=$(awk -v b="$((hb1 - hb0))" -v t="$((ht1 - ht0))" 'BEGIN {printf "%.1f", t ? 100 * b / t : 0}')"
  line+=" host_cores=$(nproc)"
  echo "$line"
  if [[ -z ${PEER_KEEP_RUNDIR:-} ]]; then rm -rf "$rundir"; else log "$peer: run dir kept: $rundir"; fi
  live_rundir=
}

status=0
first=1
for p in "${peers[@]}"; do
  case " ${all_peers[*]} ${config_peers[*]} " in *" $p "*) ;; *) echo "unknown peer: $p" >&2; usage ;; esac
  (( first )) || nap "$pause"
  first=0
  run_peer "$p" || status=1
done
exit $status
