#!/usr/bin/env bash
# Cluster mode, what it costs: SMTP through one node of a cluster of 1, 2
# and 3 nodes (etcd on loopback, every node on this machine, one core
# each), against a single node without [cluster], in one run.
#
#   bench/scripts/cluster.sh [messages] [connections]
#
# Every row: loadgen sends `messages` 4 KiB messages over `connections`
# connections to node 1, round-robin over 1,000 accounts. In a cluster a
# message is stored on its bucket's primary (handed over from node 1 when
# that is another node) and copied to the bucket's replica before the 250;
# with one node there is no replica. Prints throughput and the latency of
# the end of data (p50/p99) per row, and checks afterwards that the nodes
# hold every message (twice with two nodes or more). Then, per row, the
# latency of 1,000 IMAP STOREs (flag set and cleared in turn, one client,
# one command at a time) on an account whose bucket's primary is node 1:
# in a cluster of two or more each waits for the replica to apply it.
#
# Needs: etcd (Debian: etcd-server), a release build with --features cluster.
set -euo pipefail
MESSAGES=${1:-20000}
CONNS=${2:-32}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/scripts/ringmail-bench.sh"
cluster_builds "$ROOT"
WORK=$(mktemp -d /var/tmp/ringmail-cluster.XXXXXX)
PIDS=()
ETCD=
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    [ -n "$ETCD" ] && kill "$ETCD" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ACCOUNTS=1000
PASSWORD=bench

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "date: $(date -u +%FT%TZ); ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(etcd --version | head -1)"
echo "messages=$MESSAGES connections=$CONNS size=4096 accounts=$ACCOUNTS"
echo

# node NAME CLUSTER_TOML: start one node (cores = 1) with the accounts; sets NODE_SMTP.
node() {
    local name=$1 cluster=$2 data=$WORK/$1-data
    echo "$PASSWORD" | "$BIN" account bulk --data "$data" --pattern '{n}u@example.test' \
        --count $ACCOUNTS >/dev/null
    rm_config "$WORK/$name.toml" "$data" "cores = 1" ""
    sed -i 's/^imaps = .*/imaps = ["127.0.0.1:0"]/; s/^pop3s = .*/pop3s = ["127.0.0.1:0"]/' "$WORK/$name.toml"
    [ -z "$cluster" ] || printf '%s\n' "$cluster" >> "$WORK/$name.toml"
    rm_start "$BIN" "$WORK/$name.toml" "$WORK/$name.ready" "$WORK/$name.log" \
        || { cat "$WORK/$name.log" >&2; exit 1; }
    PIDS+=("$RM_PID")
    NODE_SMTP=$RM_SMTP
    NODE_IMAP=$RM_IMAP
}

# stores LABEL IMAP ACCOUNT: STORE latency, one line.
stores() {
    python3 - "$1" "$2" "$3" "$PASSWORD" <<'PY'
import imaplib, sys, time
label, addr, account, password = sys.argv[1:5]
host, port = addr.rsplit(":", 1)
m = imaplib.IMAP4(host, int(port))
m.login(account, password)
m.select("INBOX")
lat = []
for i in range(1000):
    t = time.perf_counter()
    typ, _ = m.store("1", "+FLAGS" if i % 2 == 0 else "-FLAGS", r"(\Seen)")
    lat.append(time.perf_counter() - t)
    assert typ == "OK", typ
m.logout()
lat.sort()
print(f"{label:<16} IMAP STORE p50 {lat[500]*1e6:.0f} us  p99 {lat[990]*1e6:.0f} us  (1,000, one at a time)")
PY
}

stop_all() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

# stored NAME...: messages held by the nodes' data directories, summed.
stored() {
    local sum=0 n
    for n in "$@"; do
        sum=$((sum + $("$BIN" inspect --data "$WORK/$n-data" --count-only)))
    done
    echo $sum
}

# run LABEL TARGET: loadgen, then one line of figures.
run() {
    local label=$1 target=$2
    "$LOADGEN" smtp --target "$target" --connections "$CONNS" --messages "$MESSAGES" \
        --accounts $ACCOUNTS --account-pattern '{n}u@example.test' --json \
        >"$WORK/$label.json" 2>"$WORK/$label.err" || { cat "$WORK/$label.err" >&2; exit 1; }
    python3 - "$WORK/$label.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["ops"]["data"]
ok, failed = r["messages_ok"], r["messages_failed"]
print(f"{sys.argv[2]:<16} {r['messages_per_s']:>8.0f} msg/s   end of data p50 {d['p50_us']/1000:.2f} ms  p99 {d['p99_us']/1000:.2f} ms   ({ok} ok, {failed} failed)")
PY
}

# Single node, no [cluster].
node single ""
run "single node" "$NODE_SMTP"
stores "single node" "$NODE_IMAP" 1u@example.test
stop_all
echo "  stored: $(stored single) of $MESSAGES"

for n in 1 2 3; do
    etcd_start "$WORK/etcd-$n"
    names=()
    first=
    for i in $(seq 1 $n); do
        cl=$(printf '[cluster]\nname = "bench%s"\nnode = "n%s"\netcd = ["http://127.0.0.1:%s"]\ninternal = "127.0.0.1:%s"\n' \
            "$n" "$i" "$ETCD_CLIENT" "$(free_port)")
        node "c$n-n$i" "$cl"
        names+=("c$n-n$i")
        [ -n "$first" ] || { first=$NODE_SMTP; first_imap=$NODE_IMAP; }
    done
    "$BIN" cluster rebalance --move-primaries --config "$WORK/c$n-n1.toml" >/dev/null
    # Every node follows the map (its log line) before the load starts.
    for nm in "${names[@]}"; do
        for _ in $(seq 100); do grep -q 'cluster: bucket map.*version=Some' "$WORK/$nm.log" && break; sleep 0.05; done
    done
    run "cluster of $n" "$first"
    # An account whose primary is node 1 (no proxy hop).
    acct=
    for a in $(seq 1 50); do
        if "$BIN" cluster locate "${a}u@example.test" --config "$WORK/c$n-n1.toml" | grep -q '^primary n1\b'; then
            acct="${a}u@example.test"; break
        fi
    done
    [ -n "$acct" ] && stores "cluster of $n" "$first_imap" "$acct"
    stop_all
    kill "$ETCD"; wait "$ETCD" 2>/dev/null || true; ETCD=
    copies=$([ "$n" -ge 2 ] && echo 2 || echo 1)
    echo "  stored: $(stored "${names[@]}") (expected $((MESSAGES * copies)))"
done
