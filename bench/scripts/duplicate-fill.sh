#!/usr/bin/env bash
# Cluster mode: what filling the duplicate table costs a node that starts.
# One node (a cluster of one, etcd on loopback, `cores` shards) takes
# `messages` 4 KiB messages from loadgen (each with its own Message-ID),
# is killed with SIGKILL and started again; prints the start-up time (to
# the ready line) and each shard's `duplicates_filled` line (messages
# read, entries, milliseconds), and checks that every message is stored.
# (That a resent message is then stored once is the cluster test
# `the_duplicate_table_outlives_a_kill_and_restart`.)
#
#   bench/scripts/duplicate-fill.sh [messages] [cores]
#
# WINDOW=0 turns the table off (`duplicate_window_secs = 0`): the same
# restart without the fill, for comparison.
#
# Needs: etcd (Debian: etcd-server), a release build with --features cluster.
set -euo pipefail
MESSAGES=${1:-100000}
CORES=${2:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/scripts/ringmail-bench.sh"
cluster_builds "$ROOT"
WORK=$(mktemp -d /var/tmp/ringmail-dupfill.XXXXXX)
ETCD=
cleanup() {
    rm_stop
    [ -n "$ETCD" ] && kill "$ETCD" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "date: $(date -u +%FT%TZ); ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); messages=$MESSAGES cores=$CORES"

etcd_start "$WORK/etcd"
echo bench | "$BIN" account bulk --data "$WORK/data" --pattern '{n}u@example.test' --count 1000 >/dev/null
rm_config "$WORK/n1.toml" "$WORK/data" "cores = $CORES" ""
printf '[cluster]\nname = "fill"\nnode = "n1"\netcd = ["http://127.0.0.1:%s"]\ninternal = "127.0.0.1:%s"\nduplicate_window_secs = %s\n' \
    "$ETCD_CLIENT" "$(free_port)" "${WINDOW:-3600}" >> "$WORK/n1.toml"

start() {
    local t0 t1
    t0=$(date +%s.%N)
    : > "$WORK/ready"
    "$BIN" serve --config "$WORK/n1.toml" > "$WORK/ready" 2>> "$WORK/log" &
    RM_PID=$!
    for _ in $(seq 1200); do grep -q '^ringmail: ready' "$WORK/ready" && break; sleep 0.05; done
    grep -q '^ringmail: ready' "$WORK/ready" || { tail -20 "$WORK/log" >&2; exit 1; }
    t1=$(date +%s.%N)
    RM_SMTP=$(grep -o 'smtp=[^ ]*' "$WORK/ready" | cut -d= -f2 | cut -d, -f1)
    python3 -c "print(f'  start-up to ready: {$t1-$t0:.2f} s')"
}
load() {
    "$LOADGEN" smtp --target "$RM_SMTP" --connections 32 --messages "$MESSAGES" \
        --accounts 1000 --account-pattern '{n}u@example.test' --json >"$WORK/load.json" 2>"$WORK/load.err" \
        || { cat "$WORK/load.err" >&2; exit 1; }
    python3 -c "import json; r=json.load(open('$WORK/load.json')); print(f\"  loadgen: {r['messages_ok']} ok, {r['messages_failed']} failed, {r['messages_per_s']:.0f} msg/s\")"
}

echo "first start (empty table):"
start
"$BIN" cluster rebalance --config "$WORK/n1.toml" >/dev/null
for _ in $(seq 100); do grep -q 'cluster: bucket map.*version=Some' "$WORK/log" && break; sleep 0.05; done
load
echo "kill -9, start again:"
kill -KILL "$RM_PID"; wait "$RM_PID" 2>/dev/null || true; RM_PID=
start
grep -o 'event="duplicates_filled".*' "$WORK/log" | tail -n "$CORES" | sed 's/^/  /'
rm_stop
echo "  stored: $("$BIN" inspect --data "$WORK/data" --count-only) of $MESSAGES"
