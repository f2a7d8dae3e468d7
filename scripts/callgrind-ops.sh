#!/usr/bin/env bash
# Instructions per operation of the server, load-independent: run the server under callgrind,
# zero its counters, drive one load scenario, dump, and divide the instructions counted in that
# window by the operations the scenario reports.
#
#   scripts/callgrind-ops.sh SERVER LOAD DATA_DIR PORT OUT_PREFIX -- <hearth-load scenario args>
#
# SERVER and LOAD are the two binaries (release builds). The data directory is reused as is
# (fill it first for replay). NOSYNC=1 runs the server with --no-sync. Prints the dump's name
# and the instructions counted, then the scenario's JSON: divide by its count of operations
# (`files` for put, `events` for replay). Only user-space instructions are counted: the
# kernel's TCP and fsync work is not in these figures.
set -euo pipefail
server=$1 load=$2 data=$3 port=$4 out=$5
shift 5
[ "$1" = "--" ] && shift
# valgrind cannot map the default 64 GiB map: a config with 8 GiB, unless CONFIG names one.
config=${CONFIG:-$out.toml}
[ -n "${CONFIG:-}" ] || echo 'map_size = 8589934592' >"$config"
valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
  "$server" serve --config "$config" --data-dir "$data" --listen "127.0.0.1:$port" ${NOSYNC:+--no-sync} >"$out.server.log" 2>&1 &
vg=$!
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.2
done
callgrind_control -z "$vg" >/dev/null 2>&1
"$load" --url "http://127.0.0.1:$port" "$@" >"$out.json" 2>"$out.summary"
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
kill -INT "$vg" 2>/dev/null || true
wait "$vg" 2>/dev/null || true
dump=$(ls -t "$out".*[0-9].[0-9]* 2>/dev/null | head -1)
total=$(grep -h '^summary:' "$dump" | awk '{print $2}')
echo "$dump total=$total"
cat "$out.json"
