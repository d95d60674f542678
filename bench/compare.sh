#!/usr/bin/env bash
# Side-by-side comparison on loopback, in one invocation, with identical
# loadgen parameters for every server:
#   SMTP : Postfix smtp-sink (no storage), Postfix (virtual maildir delivery,
#          default durability), ringmail       -- 4 KiB messages, 32 connections
#   POP3 : Dovecot (Maildir), ringmail         -- retrieve-and-delete
#   IMAP : Dovecot (Maildir), ringmail         -- loadgen's default mix, 100 sessions
# Each leg runs ROUNDS times, alternating servers (sink, postfix, ringmail,
# sink, ...); the table shows medians and ringmail's ratio to each peer.
# Raw JSON, loadgen plots and logs go to bench/results/<timestamp>/.
#
# Usage: bench/compare.sh            (as root: installs Postfix/Dovecot if missing)
# Environment (defaults in brackets):
#   ACCOUNTS [1000]  ROUNDS [3]  CORES [2]  SMTP_SECS [5]  IMAP_SECS [8]
#   POP3_PER_ACCOUNT [10]  IMAP_PER_ACCOUNT [20]  WARMUP [1]
#   STORAGE_TOML (extra lines for ringmail's [storage] section)
#   SKIP_BUILD=1 (use the existing release binaries)
#   RESULTS (output directory)
# Loopback only; every daemon it starts is stopped on exit, even on failure.
set -euo pipefail

ACCOUNTS=${ACCOUNTS:-1000}
ROUNDS=${ROUNDS:-3}
CORES=${CORES:-2}
SMTP_SECS=${SMTP_SECS:-5}
IMAP_SECS=${IMAP_SECS:-8}
WARMUP=${WARMUP:-1}
POP3_PER_ACCOUNT=${POP3_PER_ACCOUNT:-10}
IMAP_PER_ACCOUNT=${IMAP_PER_ACCOUNT:-20}
STORAGE_TOML=${STORAGE_TOML:-}
SIZE=4096
SMTP_CONNS=32
POP3_CONNS=32
IMAP_CONNS=100
PASSWORD=bench
PATTERN='{n}u@example.test'
VMAIL_UID=5000

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# rm_config, rm_start, rm_stop
. "$ROOT/bench/scripts/ringmail-bench.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench/results/$STAMP}
export PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin
START_TS=$(date +%s)

log() { printf '[%4ds] %s\n' $(( $(date +%s) - START_TS )) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ packages
if ! command -v postfix >/dev/null || ! command -v dovecot >/dev/null \
   || [ ! -e /usr/lib/dovecot/imap ] || [ ! -e /usr/lib/dovecot/pop3 ]; then
    [ "$(id -u)" = 0 ] || die "Postfix/Dovecot missing and not root"
    log "installing postfix dovecot-imapd dovecot-pop3d"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # A fresh machine's package lists may be stale (old versions give 404).
    apt-get update -q >/dev/null || log "apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix dovecot-imapd dovecot-pop3d >/dev/null
    # The packages may start system instances on the default ports: leave
    # them alone, we use our own instances on high ports.
fi
[ "$(id -u)" = 0 ] || die "run as root (Postfix and Dovecot instances need it)"
getent passwd $VMAIL_UID >/dev/null || useradd -r -u $VMAIL_UID -M -d /nonexistent -s /usr/sbin/nologin vmail

# --------------------------------------------------------------------- build
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release -p loadgen -p ringmail"
    (cd "$ROOT" && cargo build --release -q -p loadgen -p ringmail)
fi
LOADGEN=$BIN/loadgen
RINGMAIL=$BIN/ringmail
[ -x "$LOADGEN" ] && [ -x "$RINGMAIL" ] || die "release binaries missing in $BIN"

# ------------------------------------------------------------ work, cleanup
WORK=$(mktemp -d /var/tmp/ringmail-compare.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$RESULTS"
SINK_PID=; RM_PID=; PF_UP=; DC_UP=
cleanup() {
    local rc=$?
    set +e
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    [ -n "$RM_PID" ] && { kill -TERM "$RM_PID" 2>/dev/null; wait "$RM_PID" 2>/dev/null; }
    [ -n "$PF_UP" ] && postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1
    [ -n "$DC_UP" ] && dovecot -c "$WORK/dovecot/dovecot.conf" stop >/dev/null 2>&1
    # Give the masters a moment, then make sure nothing of ours is left.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pgrep -f "$WORK" >/dev/null || break
        sleep 0.3
    done
    for p in $(pgrep -f "$WORK"); do kill "$p" 2>/dev/null; done
    cp "$WORK"/postfix/maillog "$RESULTS/postfix.log" 2>/dev/null
    cp "$WORK"/dovecot/dovecot.log "$RESULTS/dovecot.log" 2>/dev/null
    cp "$WORK"/ringmail.log "$RESULTS/ringmail.log" 2>/dev/null
    rm -rf "$WORK"
    [ $rc = 0 ] || log "failed (exit $rc); partial results in $RESULTS"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback TCP ports, all at once so they differ.
read -r P_SINK P_PF P_DC_IMAP P_DC_POP3 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# -------------------------------------------------------------- smtp-sink
start_sink() {
    smtp-sink -u nobody -c 127.0.0.1:$P_SINK 1000 >/dev/null 2>&1 &
    SINK_PID=$!
}

# ------------------------------------------------------------------ Postfix
# Private instance: own config dir, queue, data dir and log; chroot off;
# virtual(8) delivery into $WORK/mail/<n>u/ Maildirs as uid 5000.
setup_postfix() {
    local etc=$WORK/postfix/etc
    mkdir -p "$etc" "$WORK/postfix/queue" "$WORK/postfix/data" "$WORK/mail"
    chown postfix "$WORK/postfix/data"
    chown $VMAIL_UID:$VMAIL_UID "$WORK/mail"
    # virtual(8) refuses regexp substitutions in mailbox paths: list them all.
    for ((n = 0; n < ACCOUNTS; n++)); do echo "${n}u@example.test ${n}u/"; done > "$etc/vmailbox"
    cat > "$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $WORK/postfix/queue
data_directory = $WORK/postfix/data
maillog_file = $WORK/postfix/maillog
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
biff = no
virtual_mailbox_domains = example.test
virtual_mailbox_base = $WORK/mail
virtual_mailbox_maps = texthash:$etc/vmailbox
virtual_uid_maps = static:$VMAIL_UID
virtual_gid_maps = static:$VMAIL_UID
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
message_size_limit = 33554432
EOF
    # Only the services this setup uses; no chroot, no system paths.
    cat > "$etc/master.cf" <<EOF
127.0.0.1:$P_PF inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    postfix -c "$etc" check >/dev/null 2>&1 || true
    postfix -c "$etc" start >/dev/null 2>&1 || { cat "$WORK/postfix/maillog" >&2 2>/dev/null; die "postfix start"; }
    PF_UP=1
}
# Messages still queued in the private instance.
postfix_queued() {
    find "$WORK/postfix/queue/incoming" "$WORK/postfix/queue/active" \
         "$WORK/postfix/queue/deferred" "$WORK/postfix/queue/maildrop" -type f 2>/dev/null | wc -l
}
wait_postfix_drained() {
    for _ in $(seq 600); do
        [ "$(postfix_queued)" = 0 ] && return 0
        sleep 0.1
    done
    log "warning: Postfix queue not empty after 60 s ($(postfix_queued) files)"
}

# ------------------------------------------------------------------ Dovecot
# Private instance serving the same Maildirs over IMAP and POP3. The login
# processes run in Dovecot's documented high-performance mode (one login
# process per CPU serving many clients) rather than one process per
# connection; mail storage settings (mail_fsync etc.) are Dovecot's defaults.
setup_dovecot() {
    local d=$WORK/dovecot
    mkdir -p "$d/run"
    cat > "$d/dovecot.conf" <<EOF
instance_name = ringmail-bench
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$WORK/mail/%n
pop3_uidl_format = %08Xu%08Xv
passdb {
  driver = static
  args = password=$PASSWORD
}
userdb {
  driver = static
  args = uid=$VMAIL_UID gid=$VMAIL_UID home=$WORK/mail/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $P_DC_IMAP
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = $CORES
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $P_DC_POP3
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 0
  process_min_avail = $CORES
}
default_client_limit = 4000
default_process_limit = 1000
EOF
    mkdir -p "$d/state"
    dovecot -c "$d/dovecot.conf" || die "dovecot start (see $d/dovecot.log)"
    DC_UP=1
}

# ----------------------------------------------------------------- ringmail
start_ringmail() {
    local data=$WORK/ringmail-data
    rm -rf "$data"
    echo "$PASSWORD" > "$WORK/password"
    "$RINGMAIL" account bulk --data "$data" --pattern "$PATTERN" --count "$ACCOUNTS" < "$WORK/password" >/dev/null \
        || die "ringmail account bulk failed"
    rm_config "$WORK/ringmail.toml" "$data" "cores = $CORES" "$STORAGE_TOML"
    rm_start "$RINGMAIL" "$WORK/ringmail.toml" "$WORK/ringmail.ready" "$WORK/ringmail.log" \
        || die "ringmail did not start (see $WORK/ringmail.log)"
}
# Does ringmail answer IMAP yet? (CAPABILITY with a tagged OK within 2 s.)
ringmail_has_imap() {
    [ -n "$RM_IMAP" ] || return 1
    python3 - "$RM_IMAP" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    s = socket.create_connection((host, int(port)), timeout=2)
    s.settimeout(2)
    buf = b""
    while b"\n" not in buf:
        d = s.recv(4096)
        if not d: sys.exit(1)
        buf += d
    s.sendall(b"a CAPABILITY\r\n")
    while b"\na OK" not in buf:
        d = s.recv(4096)
        if not d: sys.exit(1)
        buf += d
    sys.exit(0)
except Exception:
    sys.exit(1)
EOF
}

# ------------------------------------------------------------------ filling
# Dovecot's mailboxes: write Maildir files the way an MDA does (tmp/, then
# rename into new/), LF line ends like Postfix's virtual(8), 4096 bytes in
# wire (CRLF) form, loadgen's header layout.
fill_maildirs() {
    local per=$1
    python3 - "$WORK/mail" "$ACCOUNTS" "$per" "$SIZE" "$VMAIL_UID" <<'EOF'
import os, sys, time
base, accounts, per, size, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
now = int(time.time())
for a in range(accounts):
    md = os.path.join(base, f"{a}u")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
        os.chown(os.path.join(md, sub), uid, uid)
    os.chown(md, uid, uid)
    for i in range(per):
        n = a * per + i
        head = (f"X-Loadgen-Id: fill-{n}\r\nMessage-ID: <fill-{n}@loadgen.invalid>\r\n"
                f"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nFrom: sender@example.test\r\n"
                f"To: {a}u@example.test\r\nSubject: loadgen message fill-{n}\r\n"
                f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
        body = []
        left = size - len(head)
        while left > 0:
            line = min(76, max(left - 2, 1))
            body.append("x" * line + "\r\n"); left -= line + 2
        msg = (head + "".join(body)).replace("\r\n", "\n").encode()
        name = f"{now}.M{n}P{os.getpid()}.bench"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(msg)
        os.chown(tmp, uid, uid)
        os.rename(tmp, os.path.join(md, "new", name))
EOF
}
clear_maildirs() { find "$WORK/mail" -mindepth 1 -delete; }

# ------------------------------------------------------------------ loadgen
# lg NAME ARGS... : run loadgen with --json, keep JSON, plot and stderr.
lg() {
    local name=$1; shift
    local out=$RESULTS/$name
    local rc=0
    timeout 300 "$LOADGEN" "$@" --json --plot "$out.svg" --no-progress --max-time 240 \
        > "$out.json" 2> "$out.stderr" || rc=$?
    echo "{\"leg\":\"$name\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"exit\":$rc}" > "$out.meta.json"
    if [ $rc != 0 ]; then
        log "  $name: loadgen exit $rc (see $out.stderr)"
        [ $rc = 1 ] || return $rc
    fi
    python3 - "$out.json" <<'EOF' >&2 || true
import json, sys
j = json.load(open(sys.argv[1]))
v = j.get("verify")
ver = "" if not v else f" verify: ok={v['ok']} found={v['found_ok']}/{v['expected']} missing={v['missing']} corrupted={v['corrupted']} duplicated={v['duplicated']}"
c = j.get("counters", {})
cmd = f" commands/s={c['commands_ok']/j['duration_s']:.0f}" if "commands_ok" in c else ""
print(f"         msgs/s={j['messages_per_s']:.0f} sessions/s={j['sessions_per_s']:.0f}{cmd} errors={j['errors_total']}{ver}")
EOF
    return 0
}
# Unmeasured helper runs (fill, drain, warm-up).
lg_quiet() { timeout 300 "$LOADGEN" "$@" --json --no-progress --max-time 240 > /dev/null 2>> "$RESULTS/helpers.stderr"; }

ACCTS=(--accounts "$ACCOUNTS" --account-pattern "$PATTERN")
SMTP_LOAD=(--connections $SMTP_CONNS --size $SIZE --duration "$SMTP_SECS" --warmup "$WARMUP" --messages 10000000 "${ACCTS[@]}")
POP3_LOAD=(--connections $POP3_CONNS --delete "${ACCTS[@]}" --password "$PASSWORD")
IMAP_LOAD=(--connections $IMAP_CONNS --duration "$IMAP_SECS" --warmup "$WARMUP" "${ACCTS[@]}" --password "$PASSWORD"
           --mix 'login=1,select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1,logout=1')

# -------------------------------------------------------------------- start
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "versions: $(postconf -d mail_version 2>/dev/null), dovecot $(dovecot --version), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "params: ACCOUNTS=$ACCOUNTS ROUNDS=$ROUNDS CORES=$CORES SMTP_SECS=$SMTP_SECS IMAP_SECS=$IMAP_SECS WARMUP=$WARMUP POP3_PER_ACCOUNT=$POP3_PER_ACCOUNT IMAP_PER_ACCOUNT=$IMAP_PER_ACCOUNT SIZE=$SIZE STORAGE_TOML=${STORAGE_TOML//$'\n'/; }"
    echo "smtp: ${SMTP_LOAD[*]}"
    echo "pop3: ${POP3_LOAD[*]}"
    echo "imap: ${IMAP_LOAD[*]}"
    echo "uptime at start: $(uptime)"
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

log "starting smtp-sink :$P_SINK, Postfix :$P_PF, Dovecot imap :$P_DC_IMAP pop3 :$P_DC_POP3, ringmail"
setup_postfix
setup_dovecot
start_ringmail
log "ringmail: smtp=$RM_SMTP pop3=$RM_POP3 imap=$RM_IMAP"
# ringmail checks a password with argon2 (tens of ms) the first time an
# account logs in on a shard, then caches it in that shard (Dovecot's static
# passdb checks nothing). Log in to every account until the caches of all
# shards are warm (a pass whose mean login is under 5 ms, at most 8 passes),
# unmeasured, so both servers are measured with warm authentication.
for pass in 1 2 3 4 5 6 7 8; do
    timeout 300 "$LOADGEN" pop3 --target "$RM_POP3" --connections $POP3_CONNS --max-retr 0 "${ACCTS[@]}" \
        --password "$PASSWORD" --json --no-progress > "$WORK/warm.json" 2>> "$RESULTS/helpers.stderr" \
        || die "ringmail POP3 warm-up failed"
    read -r mean p90 < <(python3 -c "import json; o = json.load(open('$WORK/warm.json'))['ops']['login']; print(int(o['mean_us']), o['p90_us'])")
    log "ringmail auth warm-up pass $pass: $ACCOUNTS logins, login mean ${mean} us, p90 ${p90} us"
    [ "$mean" -lt 5000 ] && break
done

# --------------------------------------------------------------------- SMTP
log "SMTP: ${ROUNDS} rounds of smtp-sink, Postfix, ringmail (${SMTP_SECS}s each, +${WARMUP}s warm-up)"
for r in $(seq "$ROUNDS"); do
    log " round $r: smtp-sink"
    start_sink; sleep 0.3
    lg smtp-sink-r$r smtp --target 127.0.0.1:$P_SINK "${SMTP_LOAD[@]}"
    kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=

    log " round $r: postfix (load $(cut -d' ' -f1 /proc/loadavg))"
    clear_maildirs
    lg postfix-r$r smtp --target 127.0.0.1:$P_PF "${SMTP_LOAD[@]}" \
        --verify --verify-pop3 127.0.0.1:$P_DC_POP3 --password "$PASSWORD" --verify-wait 3
    wait_postfix_drained

    log " round $r: ringmail (load $(cut -d' ' -f1 /proc/loadavg))"
    lg ringmail-smtp-r$r smtp --target "$RM_SMTP" "${SMTP_LOAD[@]}" \
        --verify --verify-pop3 "$RM_POP3" --password "$PASSWORD"
    # Empty ringmail's mailboxes again (unmeasured) so later verifications
    # only read their own round.
    lg_quiet pop3 --target "$RM_POP3" "${POP3_LOAD[@]}"
done
clear_maildirs

# --------------------------------------------------------------------- POP3
log "POP3: ${ROUNDS} rounds of Dovecot, ringmail; ${POP3_PER_ACCOUNT} x ${SIZE} B per account, RETR+DELE all"
for r in $(seq "$ROUNDS"); do
    fill_maildirs "$POP3_PER_ACCOUNT"
    log " round $r: dovecot (load $(cut -d' ' -f1 /proc/loadavg))"
    lg dovecot-pop3-r$r pop3 --target 127.0.0.1:$P_DC_POP3 "${POP3_LOAD[@]}"
    clear_maildirs

    lg_quiet smtp --target "$RM_SMTP" --connections $SMTP_CONNS --size $SIZE \
        --messages $((ACCOUNTS * POP3_PER_ACCOUNT)) "${ACCTS[@]}"
    log " round $r: ringmail (load $(cut -d' ' -f1 /proc/loadavg))"
    lg ringmail-pop3-r$r pop3 --target "$RM_POP3" "${POP3_LOAD[@]}"
done

# --------------------------------------------------------------------- IMAP
RM_IMAP_OK=
if ringmail_has_imap; then RM_IMAP_OK=1; fi
log "IMAP: ${ROUNDS} rounds of Dovecot$([ -n "$RM_IMAP_OK" ] && echo ", ringmail"); ${IMAP_PER_ACCOUNT} messages per account"
fill_maildirs "$IMAP_PER_ACCOUNT"
# Dovecot indexes a Maildir at its first SELECT; do that for every account
# first (unmeasured), as on a server in steady state.
lg_quiet pop3 --target 127.0.0.1:$P_DC_POP3 --connections $POP3_CONNS --max-retr 0 "${ACCTS[@]}" --password "$PASSWORD"
if [ -n "$RM_IMAP_OK" ]; then
    lg_quiet smtp --target "$RM_SMTP" --connections $SMTP_CONNS --size $SIZE \
        --messages $((ACCOUNTS * IMAP_PER_ACCOUNT)) "${ACCTS[@]}"
else
    log " ringmail IMAP not available at $RM_IMAP (no tagged OK to CAPABILITY): its IMAP leg is skipped"
    echo "ringmail IMAP not available (no answer to 'a CAPABILITY' at ${RM_IMAP:-none}); leg skipped" > "$RESULTS/ringmail-imap-skipped.txt"
fi
for r in $(seq "$ROUNDS"); do
    log " round $r: dovecot (load $(cut -d' ' -f1 /proc/loadavg))"
    lg dovecot-imap-r$r imap --target 127.0.0.1:$P_DC_IMAP "${IMAP_LOAD[@]}"
    if [ -n "$RM_IMAP_OK" ]; then
        log " round $r: ringmail (load $(cut -d' ' -f1 /proc/loadavg))"
        lg ringmail-imap-r$r imap --target "$RM_IMAP" "${IMAP_LOAD[@]}"
    fi
done

echo "uptime at end: $(uptime)" >> "$RESULTS/machine.txt"
log "done in $(( $(date +%s) - START_TS )) s; summary:"
python3 "$ROOT/bench/scripts/summarize.py" "$RESULTS" | tee "$RESULTS/summary.txt"
