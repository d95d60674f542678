#!/usr/bin/env bash
# COMPRESS=DEFLATE (RFC 4978) on a FETCH-heavy session, with and without,
# over plain IMAP and IMAPS (imap_compress_bench.py): MESSAGES generated
# mails of 1-6 KiB appended to one account, then ROUNDS alternating rounds of
# FETCH 1:* (BODY.PEEK[]) and FETCH 1:* (ENVELOPE FLAGS UID RFC822.SIZE),
# FETCHES times each per session. Prints the client's received TCP payload
# bytes and the server's CPU time, and their ratios compressed / none.
#
# Usage: bench/scripts/imap-compress.sh
# Environment (defaults in brackets):
#   MESSAGES [2000]  ROUNDS [4]  FETCHES [5]  CORES [1]
#   RESULTS [bench/results/imap-compress-<UTC timestamp>]
# Needs a release build of ringmail (CARGO_TARGET_DIR or ./target).
set -euo pipefail
MESSAGES=${MESSAGES:-2000}
ROUNDS=${ROUNDS:-4}
FETCHES=${FETCHES:-5}
CORES=${CORES:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RESULTS=${RESULTS:-$ROOT/bench/results/imap-compress-$(date -u +%Y%m%dT%H%M%SZ)}
. "$ROOT/bench/scripts/ringmail-bench.sh"   # rm_config, rm_start, rm_stop
[ -x "$BIN/ringmail" ] || { echo "release ringmail missing in $BIN" >&2; exit 1; }

WORK=$(mktemp -d /tmp/ringmail-compress.XXXXXX)
RM_PID=
trap 'rm_stop; cp "$WORK"/*.log "$RESULTS"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
{
    echo "date: $(date -u +%FT%TZ), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "params: MESSAGES=$MESSAGES ROUNDS=$ROUNDS FETCHES=$FETCHES CORES=$CORES"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt"

echo password | "$BIN/ringmail" account add --data "$WORK/data" reader@example.test >/dev/null
# The self-signed certificate ringmail generates in DATA/tls/ serves IMAPS.
rm_config "$WORK/ringmail.toml" "$WORK/data" "cores = $CORES"
rm_start "$BIN/ringmail" "$WORK/ringmail.toml" "$WORK/ready" "$WORK/ringmail.log" \
    || { cat "$WORK/ringmail.log" >&2; exit 1; }
python3 "$ROOT/bench/scripts/imap_compress_bench.py" "$RM_IMAP" "$RM_IMAPS" "$RM_PID" reader@example.test password \
    --messages "$MESSAGES" --rounds "$ROUNDS" --fetches "$FETCHES" --json "$RESULTS/result.json" \
    2> "$RESULTS/legs.txt" | tee "$RESULTS/summary.txt"
rm_stop
grep -E ' (WARN|ERROR) ' "$WORK/ringmail.log" | grep -v 'open to other users' | head -5 || true
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt"
