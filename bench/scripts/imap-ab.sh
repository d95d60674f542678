#!/usr/bin/env bash
# IMAP before/after: loadgen's IMAP mix (the one bench/compare.sh runs, 100
# sessions) against two ringmail builds in one run on one machine, rounds
# alternating A, B, A, B ... Both servers run side by side (each idle while
# the other is measured), with the same accounts and the same messages.
#
# Usage: bench/scripts/imap-ab.sh BASE_REV [ROUNDS]
#   A = BASE_REV (built in a git worktree), B = the working tree.
# Environment: ACCOUNTS [1000] IMAP_PER_ACCOUNT [20] IMAP_SECS [8] CORES [2]
#   MIX [compare.sh's: login=1,select=5,fetch_headers=10,fetch_body=5,
#        store=5,search=3,idle=1,logout=1]; HELD=1: the same without login
#        and logout (sessions kept for the whole leg, so argon2 logins do
#        not dominate); A_BIN: a ringmail binary to use as A (no build)
# Prints, per build, commands/s per round and the median, and the median
# p99 of every command of the mix; then B/A ratios.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${1:?usage: imap-ab.sh BASE_REV [ROUNDS]}
ROUNDS=${2:-4}
ACCOUNTS=${ACCOUNTS:-1000}
PER=${IMAP_PER_ACCOUNT:-20}
SECS=${IMAP_SECS:-8}
CORES=${CORES:-2}
PASSWORD=bench
PATTERN='{n}u@example.test'
WORK=$(mktemp -d /var/tmp/imap-ab.XXXXXX)
. "$ROOT/bench/scripts/ringmail-bench.sh" # rm_config, rm_start, rm_stop

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    git -C "$ROOT" worktree remove --force "$WORK/base-src" 2>/dev/null || true
}
trap cleanup EXIT

echo "building B (working tree) and A ($BASE)" >&2
(cd "$ROOT" && cargo build --release -q -p ringmail -p loadgen)
A_BIN=${A_BIN:-}
if [ -z "$A_BIN" ]; then
    git -C "$ROOT" worktree add -q --detach "$WORK/base-src" "$BASE"
    (cd "$WORK/base-src" && CARGO_TARGET_DIR=$WORK/base-target cargo build --release -q -p ringmail)
    A_BIN=$WORK/base-target/release/ringmail
fi
LOADGEN=$ROOT/target/release/loadgen
declare -A BIN=([A]=$A_BIN [B]=$ROOT/target/release/ringmail)
declare -A IMAP
ACCTS=(--accounts "$ACCOUNTS" --account-pattern "$PATTERN")
echo "$PASSWORD" > "$WORK/password"
for s in A B; do
    data=$WORK/data-$s
    "${BIN[$s]}" account bulk --data "$data" --pattern "$PATTERN" --count "$ACCOUNTS" < "$WORK/password" >/dev/null
    rm_config "$WORK/$s.toml" "$data" "cores = $CORES"
    rm_start "${BIN[$s]}" "$WORK/$s.toml" "$WORK/$s.ready" "$WORK/$s.log"
    pids+=("$RM_PID")
    IMAP[$s]=$RM_IMAP
    "$LOADGEN" smtp --target "$RM_SMTP" --connections 32 --size 4096 \
        --messages $((ACCOUNTS * PER)) "${ACCTS[@]}" --no-progress > /dev/null
done
MIX=${MIX:-login=1,select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1,logout=1}
if [ "${HELD:-0}" = 1 ]; then MIX='select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1'; fi
for r in $(seq "$ROUNDS"); do
    for s in A B; do
        "$LOADGEN" imap --target "${IMAP[$s]}" --connections 100 --duration "$SECS" --warmup 1 \
            "${ACCTS[@]}" --password "$PASSWORD" --mix "$MIX" --seed "$r" --json --no-progress \
            > "$WORK/$s-r$r.json" 2> "$WORK/$s-r$r.stderr"
    done
done
python3 - "$WORK" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{work}/{s}-r{r}.json")) for r in range(1, rounds + 1)] for s in "AB"}
rate = lambda j: j["counters"].get("commands_ok", 0) / j["duration_s"]
med = statistics.median
ops = sorted({op for s in "AB" for j in runs[s] for op in j.get("ops", {})})
print("| build | commands/s per round | median | errors |")
print("| --- | --- | ---: | ---: |")
for s in "AB":
    rs = [rate(j) for j in runs[s]]
    errs = sum(j["errors_total"] for j in runs[s])
    print(f"| {s} | {' / '.join(f'{x:,.0f}' for x in rs)} | {med(rs):,.0f} | {errs} |")
print()
print("| command | A p99 (ms) | B p99 (ms) | B/A |")
print("| --- | ---: | ---: | ---: |")
for op in ops:
    p = {s: med(j["ops"][op]["p99_us"] / 1000 for j in runs[s] if op in j.get("ops", {})) for s in "AB"}
    print(f"| {op} | {p['A']:.2f} | {p['B']:.2f} | {p['B'] / p['A']:.2f} |")
a, b = med(rate(j) for j in runs["A"]), med(rate(j) for j in runs["B"])
print(f"\nthroughput B/A: {b / a:.3f}")
EOF
