#!/usr/bin/env bash
# Resident memory per idle IMAP session over implicit TLS (IMAPS), and the
# same over plain IMAP in the same run for comparison: a fresh ringmail per
# mode, FILL messages of 4 KiB delivered to each of ACCOUNTS accounts, then
# SESSIONS sessions logged in, INBOX selected and in IDLE (`loadgen
# imap-idle`), the server's VmRSS from /proc/PID/status before the sessions
# and while every one is held. Per session = (VmRSS held - before) / sessions
# held.
#
# Usage: bench/scripts/imap-idle-rss.sh
# Environment (defaults in brackets):
#   SESSIONS [5000]  ACCOUNTS [100]  FILL [20]  CORES [2]  HOLD [8] (seconds held)
#   MODES ["plain tls"] (either or both, in that order)  TLS_KEY [ec|rsa, ec]
#   RESULTS [bench/results/imap-idle-<UTC timestamp>] (loadgen JSON, logs)
# Needs release builds of ringmail and loadgen (CARGO_TARGET_DIR or ./target)
# and enough file descriptors: it raises the soft limit (and, as root, the
# hard one) to at least SESSIONS + 1000 for both processes.
set -euo pipefail
SESSIONS=${SESSIONS:-5000}
ACCOUNTS=${ACCOUNTS:-100}
FILL=${FILL:-20}
CORES=${CORES:-2}
HOLD=${HOLD:-8}
MODES=${MODES:-plain tls}
TLS_KEY=${TLS_KEY:-ec}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench/results/imap-idle-$STAMP}
# rm_start, rm_stop, tls_pki, tls_toml
. "$ROOT/bench/scripts/ringmail-bench.sh"
[ -x "$BIN/ringmail" ] && [ -x "$BIN/loadgen" ] || { echo "release binaries missing in $BIN" >&2; exit 1; }

need=$((SESSIONS + 1000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
    ulimit -Hn "$need" 2>/dev/null || { echo "hard RLIMIT_NOFILE $(ulimit -Hn) < $need and cannot raise it (not root?)" >&2; exit 1; }
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then ulimit -n "$need"; fi

WORK=$(mktemp -d /var/tmp/ringmail-idle.XXXXXX)
RM_PID=; LG_PID=
trap '[ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null; rm_stop; cp "$WORK"/*.log "$RESULTS"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
tls_pki "$WORK/pki" "$TLS_KEY"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
anon_kib() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }
established() { ss -Htn state established "( sport = :${1##*:} )" | wc -l; }

{
    echo "date: $(date -u +%FT%TZ), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "params: SESSIONS=$SESSIONS ACCOUNTS=$ACCOUNTS FILL=$FILL CORES=$CORES HOLD=$HOLD MODES='$MODES' TLS_KEY=$TLS_KEY nofile=$(ulimit -n)"
    echo "uptime at start: $(uptime)"
} | tee "$RESULTS/machine.txt"

ROWS=()
for mode in $MODES; do
    data=$WORK/data-$mode
    echo password | "$BIN/ringmail" account bulk --data "$data" --pattern '{n}u@example.test' --count "$ACCOUNTS" >/dev/null
    cat > "$WORK/$mode.toml" <<TOML
data_dir = "$data"
demo_accounts = []
cores = $CORES
$(tls_toml "$WORK/pki")
[listen]
smtp = ["127.0.0.1:0"]
pop3 = ["127.0.0.1:0"]
imap = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
imaps = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
[limits]
connections_max = $((SESSIONS + 1000))
connections_per_address_max = $((SESSIONS + 1000))
# Every session logs in at once: queue their password checks instead of
# answering the ones beyond the default 64 with a temporary failure.
[auth_throttle]
password_checks_queued_max = $SESSIONS
TOML
    rm_start "$BIN/ringmail" "$WORK/$mode.toml" "$WORK/$mode.ready" "$WORK/ringmail-$mode.log" \
        || { cat "$WORK/ringmail-$mode.log" >&2; exit 1; }
    if [ "$mode" = tls ]; then
        target=$RM_IMAPS
        tls=(--tls --tls-ca "$WORK/pki/ca.pem" --tls-server-name "$TLS_NAME")
    else
        target=$RM_IMAP
        tls=()
    fi
    if [ "$FILL" -gt 0 ]; then
        "$BIN/loadgen" smtp --target "$RM_SMTP" --connections 16 --size 4096 --messages $((ACCOUNTS * FILL)) \
            --accounts "$ACCOUNTS" --json --no-progress > "$RESULTS/$mode-fill.json" 2>> "$WORK/loadgen-$mode.log"
    fi
    sleep 2
    before=$(rss_kib "$RM_PID") before_anon=$(anon_kib "$RM_PID")
    "$BIN/loadgen" imap-idle --target "$target" --sessions "$SESSIONS" --hold "$HOLD" \
        --accounts "$ACCOUNTS" --password password "${tls[@]}" --json --progress --max-time 300 --timeout 120 \
        > "$RESULTS/$mode.json" 2> "$WORK/loadgen-$mode.log" &
    LG_PID=$!
    # (--timeout 120: on a loaded machine the first login of each account on
    # each shard waits for its argon2 check behind the others.)
    # Ramp: until loadgen reports the hold (every session through its IDLE
    # or failed), then sample while the sessions are held.
    for _ in $(seq 3000); do
        grep -q 'imap-idle hold:' "$WORK/loadgen-$mode.log" && break
        kill -0 "$LG_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    peak=0 peak_anon=0 est=0
    for _ in 1 2 3; do
        r=$(rss_kib "$RM_PID"); [ "$r" -gt "$peak" ] && peak=$r peak_anon=$(anon_kib "$RM_PID")
        est=$(established "$target")
        sleep 1
    done
    wait "$LG_PID" || true
    LG_PID=
    sleep 2
    after=$(rss_kib "$RM_PID")
    rm_stop
    held=$(python3 -c "import json; print(json.load(open('$RESULTS/$mode.json'))['counters'].get('held', 0))")
    rate=$(python3 -c "import json; print(json.load(open('$RESULTS/$mode.json'))['counters'].get('login_rate_per_s', 0))")
    ver=$(python3 -c "import json; t = json.load(open('$RESULTS/$mode.json')).get('tls'); print(f\"{t['version']} {t['cipher']}, {t['handshakes_full']} full / {t['handshakes_resumed']} resumed\" if t else '-')")
    per=$(python3 -c "print(f'{($peak - $before) / max($held, 1):.1f}')")
    per_anon=$(python3 -c "print(f'{($peak_anon - $before_anon) / max($held, 1):.1f}')")
    ROWS+=("| $mode | $before KiB | $peak KiB | **$per KiB** | $per_anon KiB | $est | $held | $rate/s | $ver | $after KiB |")
done
echo "uptime at end: $(uptime)" | tee -a "$RESULTS/machine.txt"
{
    echo
    echo "| mode | VmRSS before | VmRSS, all sessions idle | per session | RssAnon per session | established (ss) | held (loadgen) | logins | TLS | VmRSS 2 s after close |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS/summary.txt"
