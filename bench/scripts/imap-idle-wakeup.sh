#!/usr/bin/env bash
# EXISTS latency under IDLE: SESSIONS IMAP sessions of ONE account, INBOX
# selected, in IDLE, then DELIVERIES SMTP deliveries to that account, one
# every INTERVAL seconds; per delivery and session, the time from the SMTP
# server's 250 to the session's `* n EXISTS` (imap_idle_wakeup.py, kernel
# receive timestamps on the client's sockets). A fresh ringmail per value of
# CORES, each value of SESSIONS in turn (1 shows the delivery alone);
# p50/p99/max over all sessions and deliveries.
#
# Usage: bench/scripts/imap-idle-wakeup.sh
# Environment (defaults in brackets):
#   SESSIONS ["1 1000"]  DELIVERIES [20]  INTERVAL [1.0]  CORES ["2 1"]
#   RESULTS [bench/results/imap-idle-wakeup-<UTC timestamp>]
# Needs a release build of ringmail (CARGO_TARGET_DIR or ./target).
set -euo pipefail
SESSIONS=${SESSIONS:-1 1000}
DELIVERIES=${DELIVERIES:-20}
INTERVAL=${INTERVAL:-1.0}
CORES=${CORES:-2 1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RESULTS=${RESULTS:-$ROOT/bench/results/imap-idle-wakeup-$(date -u +%Y%m%dT%H%M%SZ)}
. "$ROOT/bench/scripts/ringmail-bench.sh"   # rm_config, rm_start, rm_stop
[ -x "$BIN/ringmail" ] || { echo "release ringmail missing in $BIN" >&2; exit 1; }
need=$(( $(tr ' ' '\n' <<< "$SESSIONS" | sort -n | tail -1) + 200 ))
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need"

WORK=$(mktemp -d /tmp/ringmail-wakeup.XXXXXX)
RM_PID=
trap 'rm_stop; cp "$WORK"/*.log "$RESULTS"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
{
    echo "date: $(date -u +%FT%TZ), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "params: SESSIONS=$SESSIONS DELIVERIES=$DELIVERIES INTERVAL=$INTERVAL CORES='$CORES'"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt"

for cores in $CORES; do
    data=$WORK/data-$cores
    echo password | "$BIN/ringmail" account add --data "$data" idle@example.test >/dev/null
    rm_config "$WORK/$cores.toml" "$data" "cores = $cores"
    # One client address holds every session; loopback is exempt from the
    # per-minute rate anyway.
    sed -i "s/^connections_per_address_max = .*/connections_per_address_max = $need\nconnections_max = $need\nconnections_per_address_per_minute = 0/" "$WORK/$cores.toml"
    rm_start "$BIN/ringmail" "$WORK/$cores.toml" "$WORK/$cores.ready" "$WORK/ringmail-cores$cores.log" \
        || { cat "$WORK/ringmail-cores$cores.log" >&2; exit 1; }
    for n in $SESSIONS; do
        echo "cores = $cores, $n sessions:" | tee -a "$RESULTS/summary.txt"
        python3 "$ROOT/bench/scripts/imap_idle_wakeup.py" "$RM_IMAP" "$RM_SMTP" idle@example.test password \
            --sessions "$n" --deliveries "$DELIVERIES" --interval "$INTERVAL" \
            --json "$RESULTS/cores$cores-$n.json" 2> "$RESULTS/cores$cores-$n.txt" | tee -a "$RESULTS/summary.txt"
    done
    rm_stop
    grep -E ' (WARN|ERROR) ' "$WORK/ringmail-cores$cores.log" | grep -v 'open to other users' | head -5 || true
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt"
