#!/usr/bin/env bash
# The relay scenarios: N homeservers and a relay on 127.0.0.1, started here, then
# relay-catchup (RUNS times, each on a fresh relay) and relay-live (RUNS times).
#
#   scripts/relay-suite.sh [SOURCES] [FILL] [RUNS] [OUT]
#
# SOURCES homeservers (default 4) on ports 19001.., each filled with FILL PUTs (default
# 250000); the relay on 19900 (admin 19901). Data directories live in a temporary directory
# that is removed at the end. RATE (default 1000) and SECONDS (default 10) shape relay-live;
# RELAY_FLAGS adds flags to `hearth relay` (e.g. --no-sync). HEARTH and HEARTH_LOAD name the
# binaries (default: target/release/, from `cargo build --release --workspace`).
set -euo pipefail
sources=${1:-4}
fill=${2:-250000}
runs=${3:-3}
out=${4:-relay-results.jsonl}
rate=${RATE:-1000}
secs=${SECONDS_LIVE:-10}
hearth=${HEARTH:-target/release/hearth}
hearth_load=${HEARTH_LOAD:-target/release/hearth-load}
relay_flags=${RELAY_FLAGS:-}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true

source_flags=()
for i in $(seq "$sources"); do
  port=$((19000 + i))
  "$hearth" serve --data-dir "$work/hs$i" --listen "127.0.0.1:$port" >"$work/hs$i.log" 2>&1 &
  pids+=($!)
  source_flags+=(--source "http://127.0.0.1:$port")
done

wait_up() {
  for _ in $(seq 100); do
    curl -sf -o /dev/null "$1/" && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2
  exit 1
}
for i in $(seq "$sources"); do wait_up "http://127.0.0.1:$((19000 + i))"; done

relay_pid=
start_relay() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null || true
  rm -rf "$work/relay"
  # shellcheck disable=SC2086
  "$hearth" relay --data-dir "$work/relay" --listen 127.0.0.1:19900 \
    --admin-listen 127.0.0.1:19901 --admin-password relay-suite $relay_flags \
    >"$work/relay.log" 2>&1 &
  relay_pid=$!
  pids+=("$relay_pid")
  wait_up http://127.0.0.1:19900
}
load() {
  "$hearth_load" --url http://127.0.0.1:19900 --pid "$relay_pid" "$@" \
    --relay-admin http://127.0.0.1:19901 --relay-password relay-suite "${source_flags[@]}" |
    tee -a "$out"
}

start_relay
load relay-catchup --fill "$fill" --fill-writers "$((sources > 16 ? 4 : 32))"
for _ in $(seq 2 "$runs"); do
  start_relay
  load relay-catchup
done
for _ in $(seq "$runs"); do load relay-live --rate "$rate" --seconds "$secs"; done
