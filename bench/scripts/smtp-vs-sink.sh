#!/usr/bin/env bash
# Issue benchmark: Postfix's smtp-source against smtp-sink (no storage: the
# speed limit of the SMTP conversation) and against ringmail with durable
# delivery spread over 20,000 accounts on every shard, in one run.
# Needs: postfix installed (smtp-source, smtp-sink), a release build.
# Usage: bench/scripts/smtp-vs-sink.sh [messages] [sessions] [size]
set -euo pipefail
MESSAGES=${1:-20000}
SESSIONS=${2:-32}
SIZE=${3:-4096}
CORES=${CORES:-2}
# Extra [storage] lines, e.g. STORAGE_TOML='spin_before_park_us = 50'
STORAGE_TOML=${STORAGE_TOML:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ringmail
[ -x "$BIN" ] || cargo build --release -p ringmail --manifest-path "$ROOT/Cargo.toml"
command -v smtp-source >/dev/null || PATH=$PATH:/usr/sbin
WORK=$(mktemp -d /var/tmp/ringmail-bench.XXXXXX)
# rm_config, rm_start, rm_stop
. "$ROOT/bench/scripts/ringmail-bench.sh"
trap 'kill $SINK 2>/dev/null || true; rm_stop; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
SINK=; RM_PID=

rate() { python3 -c "import sys; print(f'{int(sys.argv[1])/float(sys.argv[2]):.0f}')" "$1" "$2"; }
timeit() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.3f}')"; }

# 1. smtp-sink
PORT_SINK=$((20000 + RANDOM % 10000))
SINK_USER=$([ "$(id -u)" = 0 ] && echo "-u nobody" || true)
smtp-sink $SINK_USER -c 127.0.0.1:$PORT_SINK 1000 >/dev/null 2>&1 & SINK=$!
sleep 0.5
T_SINK=$(timeit smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -N -f bench@example.test -t u@example.test 127.0.0.1:$PORT_SINK)
kill $SINK; wait $SINK 2>/dev/null || true; SINK=

# 2. ringmail: accounts 0u..Nu, durable delivery
echo bench | "$BIN" account bulk --data "$WORK/data" --pattern '{n}u@example.test' --count $((MESSAGES + 1)) >/dev/null
rm_config "$WORK/ringmail.toml" "$WORK/data" "cores = $CORES" "$STORAGE_TOML"
rm_start "$BIN" "$WORK/ringmail.toml" "$WORK/ready" "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
T_RM=$(timeit smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -N -f bench@example.test -t u@example.test "$RM_SMTP")
rm_stop
STORED=$("$BIN" inspect --data "$WORK/data" --count-only)

R_SINK=$(rate "$MESSAGES" "$T_SINK"); R_RM=$(rate "$MESSAGES" "$T_RM")
echo "machine: $(nproc) cores, $(uname -r); messages=$MESSAGES sessions=$SESSIONS size=$SIZE cores=$CORES"
echo "smtp-sink : ${T_SINK}s  ${R_SINK} msg/s"
echo "ringmail  : ${T_RM}s  ${R_RM} msg/s  (stored: $STORED messages)"
python3 -c "print(f'ratio ringmail/smtp-sink: {$R_RM/$R_SINK:.2f}')"
[ "$STORED" -eq "$MESSAGES" ] || { echo "ERROR: expected $MESSAGES stored messages, found $STORED"; exit 1; }
