#!/usr/bin/env bash
# The scenarios of BENCHMARKS.md's summary, each on a freshly started server, RUNS times.
#
#   scripts/round-suite.sh [RUNS] [OUT_DIR]
#
# Starts `hearth serve` (HEARTH, default target/release/hearth, durable) on 127.0.0.1:6287
# with a data directory under a temporary directory, runs hearth-load (HEARTH_LOAD, default
# target/release/hearth-load) against it, and appends each run's JSON line to
# OUT_DIR/<scenario>.jsonl (default ./round-results); readable summaries go to OUT_DIR/log.txt.
# HEARTH may name an older build of this repository to compare with (same flags).
# FILL (default 1000000) is the size of the log the replay scenarios read.
set -euo pipefail
runs=${1:-3}
out=${2:-round-results}
hearth=${HEARTH:-target/release/hearth}
hearth_load=${HEARTH_LOAD:-target/release/hearth-load}
fill=${FILL:-1000000}
url=http://127.0.0.1:6287
mkdir -p "$out"
work=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    pid=
  fi
}
trap 'stop; rm -rf "$work"' EXIT
ulimit -n 20000 2>/dev/null || true

# Start a server on DIR (a fresh one unless KEEP=1).
start() {
  local dir=$work/$1
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
  "$hearth" serve --data-dir "$dir" --listen 127.0.0.1:6287 >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -s -m1 "$url/" >/dev/null && return
    sleep 0.1
  done
  echo "the server did not start: $(tail -3 "$dir.log")" >&2
  exit 1
}
load() {
  local scenario=$1
  shift
  "$hearth_load" --url "$url" --pid "$pid" "$@" >>"$out/$scenario.jsonl" 2>>"$out/log.txt"
}
memory() { grep -E "VmRSS|RssAnon|RssFile" "/proc/$pid/status" | tr -s ' \t\n' ' '; echo; }

for _ in $(seq "$runs"); do
  start put; load put32 put --users 32 --writers 32 --files 50000 --size 256; stop
  start put; load put1 put --users 1 --writers 1 --files 3000 --size 256; stop
done
for _ in $(seq "$runs"); do
  start rss; load rss put --users 1000 --writers 64 --files 40000 --size 256
  memory >>"$out/rss.txt"; stop
done
for _ in $(seq "$runs"); do
  start live; load live live --subscribers 1000 --rate 500 --seconds 10; stop
done
for _ in $(seq "$runs"); do
  # Idle on a fresh process: the allocator keeps what the connections took.
  start idle; load idle idle --connections 10000 --hold 3; stop
done
start replay; load fill put --users 1000 --writers 64 --files "$fill" --size 256 --max-seconds 300; stop
# Replay on a restarted server, as an indexer would find it.
KEEP=1 start replay
for _ in $(seq "$runs"); do load replay replay --via firehose --via events; done
for _ in $(seq "$runs"); do load replay-user replay --via events-stream --per-stream 1 --max-seconds 60; done
for _ in $(seq "$runs"); do load replay-50 replay --via events-stream --per-stream 50 --max-seconds 60; done
stop
echo "done: $out"
