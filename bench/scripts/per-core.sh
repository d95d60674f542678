#!/usr/bin/env bash
# Per-core speed, one command: ringmail with durable delivery against
# Postfix's smtp-sink (no storage: the cost of the SMTP conversation alone),
# both driven by smtp-source in the same run, as ratios, plus where each
# server's time goes per message.
#
#   bench/scripts/per-core.sh [messages] [sessions] [size]
#
# Rows (each: sink, then ringmail, then the ratio):
#   cores=1  a new connection per message; the server (sink, or ringmail's
#            one executor) on CPU 0, smtp-source on CPU 1
#   cores=2  a new connection per message; everything shares both CPUs
#   reuse    cores=1 as above, smtp-source -d (one connection per session)
# Breakdown per message (cores=1 rows, from `perf stat` on the server's
# process while the load runs): CPU time, syscalls, io_uring submissions and
# completions, context switches. PROFILE=1 also records a CPU profile of
# ringmail (perf record, cpu-clock) into $OUT/ringmail.perf.
#
# Needs: postfix (smtp-source, smtp-sink), perf, a release build.
set -euo pipefail
MESSAGES=${1:-20000}
SESSIONS=${2:-32}
SIZE=${3:-4096}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ringmail
[ -x "$BIN" ] || cargo build --release -p ringmail --manifest-path "$ROOT/Cargo.toml"
PATH=$PATH:/usr/sbin
command -v smtp-source >/dev/null || { echo "needs postfix (smtp-source, smtp-sink)" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf (linux-perf)" >&2; exit 1; }
WORK=$(mktemp -d /var/tmp/ringmail-percore.XXXXXX)
OUT=${OUT:-$WORK}
. "$ROOT/bench/scripts/ringmail-bench.sh"
SINK=; RM_PID=
trap 'kill $SINK 2>/dev/null || true; rm_stop; wait 2>/dev/null || true; [ "$OUT" = "$WORK" ] || rm -rf "$WORK"' EXIT

EVENTS=task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete
SINK_USER=$([ "$(id -u)" = 0 ] && echo "-u nobody" || true)

timeit() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.3f}')"; }

# load ADDR [-d]: smtp-source on CPU 1 (both CPUs when CPU1=any); prints seconds.
load() {
    local addr=$1; shift
    local pin=(taskset -c 1)
    [ "${CPU1:-1}" = any ] && pin=()
    timeit "${pin[@]}" smtp-source "$@" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -N \
        -f bench@example.test -t u@example.test "$addr"
}

# measured PID NAME ADDR [smtp-source options]: the load under perf stat on
# PID; prints seconds, and leaves the counters in $WORK/NAME.stat.
measured() {
    local pid=$1 name=$2 addr=$3; shift 3
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$WORK/$name.stat" &
    local perf=$!
    sleep 0.3
    local t
    t=$(load "$addr" "$@")
    kill -INT $perf; wait $perf 2>/dev/null || true
    echo "$t"
}

# per_message NAME: the perf stat counters divided by MESSAGES.
per_message() {
    python3 - "$WORK/$1.stat" "$MESSAGES" <<'PY'
import sys
vals = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 3 and f[0] and not line.startswith("#"):
        try:
            vals[f[2]] = float(f[0])
        except ValueError:
            pass
n = float(sys.argv[2])
g = lambda k: vals.get(k, 0.0) / n
print(f"cpu {g('task-clock')*1000:.1f} us, syscalls {g('raw_syscalls:sys_enter'):.1f}, "
      f"uring sqe {g('io_uring:io_uring_submit_req'):.1f} cqe {g('io_uring:io_uring_complete'):.1f}, "
      f"ctx switches {g('context-switches'):.2f}, migrations {g('cpu-migrations'):.3f}")
PY
}

sink_start() {
    local port=$((20000 + RANDOM % 10000))
    taskset -c "${1:-0-1}" smtp-sink $SINK_USER -c 127.0.0.1:$port 1000 >/dev/null 2>&1 &
    SINK=$!
    SINK_ADDR=127.0.0.1:$port
    sleep 0.5
}
sink_stop() { kill $SINK; wait $SINK 2>/dev/null || true; SINK=; }

ringmail_start() {
    local cores=$1
    local data=$WORK/data-$1-$2
    echo bench | "$BIN" account bulk --data "$data" --pattern '{n}u@example.test' \
        --count $((MESSAGES + 1)) >/dev/null
    rm_config "$WORK/ringmail.toml" "$data" "cores = $cores" "${STORAGE_TOML:-}"
    rm_start "$BIN" "$WORK/ringmail.toml" "$WORK/ready" "$WORK/log" || { cat "$WORK/log" >&2; exit 1; }
}

ringmail_stop() {
    local data=$1
    rm_stop
    local stored
    stored=$("$BIN" inspect --data "$data" --count-only)
    [ "$stored" -eq "$MESSAGES" ] || { echo "ERROR: $stored stored, expected $MESSAGES" >&2; exit 1; }
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}')" "$1" "$2"; }  # throughput ratio ringmail/sink = sink time / ringmail time
rate() { python3 -c "import sys; print(f'{int(sys.argv[1])/float(sys.argv[2]):.0f}')" "$MESSAGES" "$1"; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "date: $(date -u +%FT%TZ); ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(postconf -d mail_version 2>/dev/null | sed 's/ = / /')"
echo "messages=$MESSAGES sessions=$SESSIONS size=$SIZE"
echo

row() { # NAME SINK_SECONDS RM_SECONDS
    printf '%-7s smtp-sink %6s msg/s   ringmail %6s msg/s   ratio %s\n' "$1" "$(rate "$2")" "$(rate "$3")" "$(ratio "$2" "$3")"
}

# cores=1, a new connection per message.
sink_start 0
T_SINK1=$(measured $SINK sink1 "$SINK_ADDR")
sink_stop
ringmail_start 1 new
PROF=()
if [ "${PROFILE:-0}" = 1 ]; then
    perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$RM_PID" -o "$OUT/ringmail.perf" 2>/dev/null &
    PROF=($!)
    sleep 0.3
fi
T_RM1=$(measured $RM_PID rm1 "$RM_SMTP")
[ ${#PROF[@]} -eq 0 ] || { kill -INT "${PROF[0]}"; wait "${PROF[0]}" 2>/dev/null || true; }
ringmail_stop "$WORK/data-1-new"
row cores=1 "$T_SINK1" "$T_RM1"

# cores=2, everything on both CPUs.
sink_start 0-1
T_SINK2=$(CPU1=any load "$SINK_ADDR")
sink_stop
ringmail_start 2 new
T_RM2=$(CPU1=any load "$RM_SMTP")
ringmail_stop "$WORK/data-2-new"
row cores=2 "$T_SINK2" "$T_RM2"

# Connection reuse, cores=1.
sink_start 0
T_SINKD=$(measured $SINK sinkd "$SINK_ADDR" -d)
sink_stop
ringmail_start 1 reuse
T_RMD=$(measured $RM_PID rmd "$RM_SMTP" -d)
ringmail_stop "$WORK/data-1-reuse"
row reuse "$T_SINKD" "$T_RMD"

echo
echo "per message, cores=1, new connection each:"
echo "  smtp-sink: $(per_message sink1)"
echo "  ringmail : $(per_message rm1)"
echo "per message, cores=1, connection reuse:"
echo "  smtp-sink: $(per_message sinkd)"
echo "  ringmail : $(per_message rmd)"
[ "${PROFILE:-0}" = 1 ] && echo "profile: $OUT/ringmail.perf (perf report -i ...)"
