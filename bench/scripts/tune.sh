#!/usr/bin/env bash
# A/B runs of ringmail settings with loadgen (SMTP, optionally POP3), the
# variants alternating round by round so that background noise hits all of
# them alike; prints the median of each. Used for docs/TUNING.md.
#
# Usage: bench/scripts/tune.sh 'LABEL|TOP-LEVEL TOML|[storage] TOML|BINARY' ...
#   e.g. bench/scripts/tune.sh 'default|||' 'spin 50us||spin_before_park_us = 50|'
#   Lines inside a TOML field are separated with ';'. BINARY defaults to the
#   release build (CARGO_TARGET_DIR or ./target).
# Environment: ROUNDS [3] SECS [5] CONNS [32] SIZE [4096] ACCOUNTS [1000]
#   POP3=1 also times retrieve-and-delete of what the SMTP run delivered.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-32}
SIZE=${SIZE:-4096}
ACCOUNTS=${ACCOUNTS:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
LOADGEN=$BIN/loadgen
WORK=$(mktemp -d /var/tmp/ringmail-tune.XXXXXX)
# rm_config, rm_start, rm_stop
. "$ROOT/bench/scripts/ringmail-bench.sh"
RM_PID=
trap 'rm_stop; wait 2>/dev/null; rm -rf "$WORK"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "loadgen smtp --connections $CONNS --size $SIZE --duration $SECS --warmup 1 --accounts $ACCOUNTS; rounds=$ROUNDS"
echo "start: $(uptime)"
i=0
for r in $(seq "$ROUNDS"); do
    i=0
    for v in "$@"; do
        IFS='|' read -r label top storage bin <<< "$v"
        bin=${bin:-$BIN/ringmail}
        d=$WORK/data
        rm -rf "$d"
        echo bench > "$WORK/pw"
        "$bin" account bulk --data "$d" --pattern '{n}u@example.test' --count "$ACCOUNTS" < "$WORK/pw" >/dev/null \
            || { echo "account bulk failed" >&2; exit 1; }
        rm_config "$WORK/rm.toml" "$d" "${top//;/$'\n'}" "${storage//;/$'\n'}"
        : > "$WORK/log"
        rm_start "$bin" "$WORK/rm.toml" "$WORK/ready" "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
        smtp=$RM_SMTP pop3=$RM_POP3
        load=$(cut -d' ' -f1 /proc/loadavg)
        "$LOADGEN" smtp --target "$smtp" --connections "$CONNS" --size "$SIZE" --duration "$SECS" --warmup 1 \
            --messages 10000000 --accounts "$ACCOUNTS" --json --no-progress > "$WORK/v$i-r$r.smtp.json" 2>"$WORK/lg.err" \
            || { echo "loadgen failed ($label, round $r):" >&2; tail -5 "$WORK/lg.err" >&2; exit 1; }
        echo "{\"load1\": $load}" > "$WORK/v$i-r$r.load.json"
        if [ -n "${POP3:-}" ]; then
            "$LOADGEN" pop3 --target "$pop3" --connections "$CONNS" --delete --accounts "$ACCOUNTS" \
                --password bench --json --no-progress > /dev/null 2>&1 || true   # warms the auth cache
            "$LOADGEN" smtp --target "$smtp" --connections "$CONNS" --size "$SIZE" --messages $((ACCOUNTS * 10)) \
                --accounts "$ACCOUNTS" --json --no-progress > /dev/null 2>&1
            "$LOADGEN" pop3 --target "$pop3" --connections "$CONNS" --delete --accounts "$ACCOUNTS" \
                --password bench --json --no-progress > "$WORK/v$i-r$r.pop3.json" 2>/dev/null
        fi
        rm_stop
        i=$((i + 1))
    done
done
echo "end: $(uptime)"
i=0
for v in "$@"; do
    IFS='|' read -r label _ <<< "$v"
    python3 - "$WORK" "$i" "$label" <<'EOF'
import glob, json, statistics, sys
w, i, label = sys.argv[1], sys.argv[2], sys.argv[3]
def runs(kind):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{w}/v{i}-r*.{kind}.json"))]
s = runs("smtp")
loads = [json.load(open(p))["load1"] for p in sorted(glob.glob(f"{w}/v{i}-r*.load.json"))]
rates = [j["messages_per_s"] for j in s]
p99 = [j["ops"]["message"]["p99_us"] / 1000 if "message" in j["ops"] else float("nan") for j in s]
errs = sum(j["errors_total"] for j in s)
line = (f"{label:28s} smtp msg/s median {statistics.median(rates):8.0f}  rounds {' / '.join(f'{x:.0f}' for x in rates)}"
        f"  p99 {statistics.median(p99):6.1f} ms  errors {errs}  load1 {' / '.join(f'{x:.1f}' for x in loads)}")
p = runs("pop3")
if p:
    pr = [j["messages_per_s"] for j in p]
    line += f"  | pop3 msg/s median {statistics.median(pr):7.0f} rounds {' / '.join(f'{x:.0f}' for x in pr)}"
print(line)
EOF
    i=$((i + 1))
done
