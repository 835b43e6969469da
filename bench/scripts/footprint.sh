#!/usr/bin/env bash
# Footprint: how many crates nacos-axum adds to a bare axum app's dependency tree, against
# nacos-sdk (the official Rust SDK, resolved only), and the release build time it adds.
# Usage: bench/scripts/footprint.sh [--no-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_app() { # name, extra dependency lines
  mkdir -p "$work/$1/src"
  cat > "$work/$1/Cargo.toml" <<TOML
[package]
name = "$1"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
axum = "0.8"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }
$2

[workspace]
TOML
  echo 'fn main() {}' > "$work/$1/src/main.rs"
}

make_app bare ""
make_app with-nacos-axum "nacos-axum = { path = \"$root/nacos-axum\" }"
make_app with-nacos-sdk 'nacos-sdk = { version = "0.8", default-features = false, features = ["naming"] }'

count() { (cd "$work/$1" && cargo tree -e normal --prefix none 2>/dev/null | sed 's/ (\*)//' | sort -u | wc -l); }
bare=$(count bare)
ours=$(count with-nacos-axum)
sdk=$(count with-nacos-sdk)
echo "crates in the tree: bare axum app ${bare}; with nacos-axum ${ours} (+$((ours - bare))); with nacos-sdk ${sdk} (+$((sdk - bare)))"

if [ "${1:-}" != "--no-build" ]; then
  build() {
    (cd "$work/$1" && cargo fetch -q && start=$(date +%s.%N) && cargo build -q --release && end=$(date +%s.%N) && echo "$end - $start" | bc)
  }
  tb=$(build bare)
  to=$(build with-nacos-axum)
  echo "release build from scratch: bare ${tb}s; with nacos-axum ${to}s (+$(echo "$to - $tb" | bc)s)"
fi
