#!/usr/bin/env bash
# Run every load scenario RUNS times against a running server and keep the JSON lines.
#
#   scripts/load-suite.sh PID [URL] [RUNS] [OUT]
#
# PID is the server's process id (memory and CPU are read from /proc/PID); URL defaults to
# http://127.0.0.1:6287. The server must allow open signup, and `ulimit -n` must allow
# 10,100 descriptors for both it and this script. Set HEARTH_LOAD to the load tool (default:
# target/release/hearth-load, from `cargo build --release -p hearth-load`) and
# STREAM=events-stream to aim the subscriber scenarios at Pubky's /events-stream instead of
# Hearth's /firehose (for other homeservers).
# The replay scenario reads the whole log: the put runs fill it first, so the order matters.
set -euo pipefail
pid=${1:?usage: load-suite.sh PID [URL] [RUNS] [OUT]}
url=${2:-http://127.0.0.1:6287}
runs=${3:-3}
out=${4:-load-results.jsonl}
hearth_load=${HEARTH_LOAD:-target/release/hearth-load}
stream=${STREAM:-firehose}
load() { "$hearth_load" --url "$url" --pid "$pid" "$@" | tee -a "$out"; }

ulimit -n 20000 2>/dev/null || true
for _ in $(seq "$runs"); do load put --users 32 --writers 32 --files 50000 --size 256; done
# Fill the log to about a million events for replay.
load put --users 100 --writers 64 --files 800000 --size 256 --max-seconds 300
if [ "$stream" = firehose ]; then
  for _ in $(seq "$runs"); do load replay --via firehose --via events --via events-stream; done
else
  for _ in $(seq "$runs"); do load replay --via events --via events-stream; done
fi
for _ in $(seq "$runs"); do
  load live --subscribers 1000 --rate 500 --seconds 10 --stream "$stream"
done
for _ in $(seq "$runs"); do load slow --events 100000 --stream "$stream"; done
load slow --events 300000 --stream "$stream"
# Idle last: the allocator keeps what 10,000 connections took, so only the first run on a
# fresh process shows the full cost; restart the server between idle runs for clean figures.
load idle --connections 10000 --hold 3 --stream "$stream"
