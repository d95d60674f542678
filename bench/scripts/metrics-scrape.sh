#!/usr/bin/env bash
# What scraping /metrics every second costs: one ringmail (release build),
# loadgen SMTP and IMAP legs run alternately with and without a scraper that
# fetches /metrics once a second (Python's urllib, as Prometheus would), in
# one run on one machine. Prints each round and the median ratio per leg.
#
# Usage: bench/scripts/metrics-scrape.sh      (SKIP_BUILD=1: use target/release)
# Environment: ROUNDS [3]  SECS [6]  ACCOUNTS [200]  CORES [2]
# Loopback only; the server and the scraper are stopped on exit.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
ACCOUNTS=${ACCOUNTS:-200}
CORES=${CORES:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/scripts/ringmail-bench.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --locked -p ringmail -p loadgen >&2)
WORK=$(mktemp -d /tmp/ringmail-scrape.XXXXXX)
SCRAPER=
cleanup() {
    [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
    rm_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

rm_config "$WORK/ringmail.toml" "$WORK/data" "cores = $CORES"
mkdir -p "$WORK/data"
for i in $(seq 0 $((ACCOUNTS - 1))); do echo "${i}u@example.test"; done \
    | while read -r a; do echo bench | "$BIN/ringmail" account add "$a" --data "$WORK/data" >/dev/null; done
rm_start "$BIN/ringmail" "$WORK/ringmail.toml" "$WORK/ready" "$WORK/ringmail.log" || { cat "$WORK/ringmail.log"; exit 1; }
HTTP=$(grep -o 'http=[^ ]*' "$WORK/ready" | cut -d= -f2 | cut -d, -f1)
ACCTS=(--accounts "$ACCOUNTS" --account-pattern '{n}u@example.test')
lg() { timeout 120 "$BIN/loadgen" "$@" --json --no-progress; }
rate() { python3 -c 'import json,sys; print(json.load(sys.stdin)["'"$1"'"])'; }

# Mail for the IMAP leg to read.
lg smtp --target "$RM_SMTP" --connections 32 --size 4096 --duration 4 --warmup 1 --messages 10000000 "${ACCTS[@]}" >/dev/null

start_scraper() {
    python3 - "$HTTP" <<'PY' &
import sys, time, urllib.request
url = "http://%s/metrics" % sys.argv[1]
while True:
    t = time.monotonic()
    body = urllib.request.urlopen(url, timeout=5).read()
    assert b"ringmail_smtp_transactions_total" in body
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
PY
    SCRAPER=$!
}
stop_scraper() { kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=; }

# One leg: "smtp" (messages/s) or "imap" (commands/s). SMTP legs grow the
# mailboxes that IMAP legs search and fetch, so the SMTP rounds come first,
# then the IMAP rounds, and within each round the order alternates (ABBA) so
# that drift does not favour one side.
leg() {
    case $1 in
    smtp) lg smtp --target "$RM_SMTP" --connections 32 --size 4096 --duration "$SECS" --warmup 1 --messages 10000000 "${ACCTS[@]}" | rate messages_per_s ;;
    imap) lg imap --target "$RM_IMAP" --connections 50 --duration "$SECS" --warmup 1 "${ACCTS[@]}" --password bench \
            --mix 'select=5,fetch_headers=10,fetch_body=5,search=3' \
            | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["counters"]["commands_ok"]/r["duration_s"])' ;;
    esac
}
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
summary=""
for kind in smtp imap; do
    ratios=()
    for r in $(seq "$ROUNDS"); do
        if ((r % 2)); then order="none scrape"; else order="scrape none"; fi
        for mode in $order; do
            [ "$mode" = scrape ] && start_scraper
            v=$(leg "$kind")
            [ "$mode" = scrape ] && stop_scraper
            printf 'round %s %-6s %s %8.0f /s\n' "$r" "$mode" "$kind" "$v"
            eval "v_$mode=$v"
        done
        ratios+=("$(python3 -c "print($v_scrape / $v_none)")")
    done
    summary+=$(printf '%s %.3f  ' "$kind" "$(med "${ratios[@]}")")
done
printf 'median scrape/none ratio: %s(load average %s)\n' "$summary" "$(cut -d' ' -f1-3 /proc/loadavg)"
