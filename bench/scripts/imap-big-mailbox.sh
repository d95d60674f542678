#!/usr/bin/env bash
# A MESSAGES-message INBOX (one account, SIZE-byte messages delivered by
# `loadgen smtp`): the server's VmRSS per selected session and message, and
# the times of SELECT, FETCH 1:* (UID FLAGS), UID SEARCH UNSEEN and a UID
# FETCH of the last UIDs (imap_big_mailbox.py).
#
# Usage: bench/scripts/imap-big-mailbox.sh
# Environment (defaults in brackets):
#   MESSAGES [100000]  SIZE [500]  SESSIONS [1,10,100]  REPEAT [5]  CORES [2]
#   RESULTS [bench/results/imap-big-mailbox-<UTC timestamp>]
# Needs release builds of ringmail and loadgen (CARGO_TARGET_DIR or ./target).
set -euo pipefail
MESSAGES=${MESSAGES:-100000}
SIZE=${SIZE:-500}
SESSIONS=${SESSIONS:-1,10,100}
REPEAT=${REPEAT:-5}
CORES=${CORES:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RESULTS=${RESULTS:-$ROOT/bench/results/imap-big-mailbox-$(date -u +%Y%m%dT%H%M%SZ)}
. "$ROOT/bench/scripts/ringmail-bench.sh"   # rm_config, rm_start, rm_stop
[ -x "$BIN/ringmail" ] && [ -x "$BIN/loadgen" ] || { echo "release binaries missing in $BIN" >&2; exit 1; }

WORK=$(mktemp -d /tmp/ringmail-big.XXXXXX)
RM_PID=
trap 'rm_stop; cp "$WORK"/*.log "$RESULTS"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
{
    echo "date: $(date -u +%FT%TZ), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "params: MESSAGES=$MESSAGES SIZE=$SIZE SESSIONS=$SESSIONS REPEAT=$REPEAT CORES=$CORES"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt"

echo password | "$BIN/ringmail" account add --data "$WORK/data" big@example.test >/dev/null
rm_config "$WORK/ringmail.toml" "$WORK/data" "cores = $CORES"
rm_start "$BIN/ringmail" "$WORK/ringmail.toml" "$WORK/ready" "$WORK/ringmail.log" \
    || { cat "$WORK/ringmail.log" >&2; exit 1; }
t=$(date +%s.%N)
"$BIN/loadgen" smtp --target "$RM_SMTP" --connections 16 --size "$SIZE" --messages "$MESSAGES" \
    --accounts 1 --account-pattern big@example.test --json --no-progress \
    > "$RESULTS/fill.json" 2> "$WORK/loadgen.log"
echo "filled $MESSAGES x $SIZE bytes in $(echo "$(date +%s.%N) - $t" | bc) s" | tee -a "$RESULTS/machine.txt"
python3 "$ROOT/bench/scripts/imap_big_mailbox.py" "$RM_IMAP" "$RM_PID" big@example.test password \
    --sessions "$SESSIONS" --repeat "$REPEAT" --json "$RESULTS/result.json" 2>&1 >/dev/null | tee "$RESULTS/summary.txt"
rm_stop
grep -E ' (WARN|ERROR) ' "$WORK/ringmail.log" | grep -v 'open to other users' | head -5 || true
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt"
