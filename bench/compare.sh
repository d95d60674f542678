#!/usr/bin/env bash
# Side-by-side comparison on loopback, in one invocation, with identical
# loadgen parameters for every server:
#   SMTP : Postfix smtp-sink (no storage), Postfix (virtual maildir delivery,
#          default durability), ringmail       -- 4 KiB messages, 32 connections
#   POP3 : Dovecot (Maildir), ringmail         -- retrieve-and-delete
#   IMAP : Dovecot (Maildir), ringmail         -- loadgen's default mix, 100 sessions
# With TLS=1 (the default) the same run adds, on one test CA and server
# certificate made with openssl in the work directory (TLS_KEY: ec = ECDSA
# P-256, rsa = RSA 2048; the same key and chain for every server):
#   SMTP : Postfix and ringmail with STARTTLS, connection reuse; and Postfix
#          and ringmail with a connection per message, plain and STARTTLS
#   POP3S, IMAPS (implicit TLS): Dovecot, ringmail -- the POP3/IMAP loads above
#   TLS handshakes per core: a second ringmail with cores = 1, POP3 sessions
#          with a new connection each (plain, POP3S full handshakes, POP3S
#          resumed), the server's CPU time sampled over the measured window
# Each leg runs ROUNDS times, alternating servers (sink, postfix, ringmail,
# sink, ...); the table shows medians and ringmail's ratio to each peer.
# Raw JSON, loadgen plots and logs go to bench/results/<timestamp>/.
#
# Usage: bench/compare.sh            (as root: installs Postfix/Dovecot if missing)
# Environment (defaults in brackets):
#   ACCOUNTS [1000]  ROUNDS [3]  CORES [2]  SMTP_SECS [5]  IMAP_SECS [8]
#   POP3_PER_ACCOUNT [10]  IMAP_PER_ACCOUNT [20]  WARMUP [1]
#   TLS [1] (0: plain legs only)  TLS_KEY [ec]  HS_SECS [5]  HS_ACCOUNTS [400]
#   STORAGE_TOML (extra lines for ringmail's [storage] section)
#   POP3_RATE (sessions/s: the POP3 legs in an open loop, every server
#          offered the same rate, instead of as fast as each answers)
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
TLS=${TLS:-1}
TLS_KEY=${TLS_KEY:-ec}
HS_SECS=${HS_SECS:-5}
HS_ACCOUNTS=${HS_ACCOUNTS:-400}
HS_CONNS=16
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
PKI=$WORK/pki
if [ "$TLS" = 1 ]; then
    tls_pki "$PKI" "$TLS_KEY" || die "openssl could not make the test certificates"
    cp "$PKI/ca.pem" "$RESULTS/tls-ca.pem"
    { openssl x509 -in "$PKI/server.pem" -noout -subject -issuer -ext subjectAltName -fingerprint -sha256
      openssl x509 -in "$PKI/server.pem" -noout -text | grep -E 'Public Key Algorithm|Public-Key|NIST CURVE' | sed 's/^ *//'
    } > "$RESULTS/tls-server-cert.txt" 2>&1
fi
TLS_ARGS=(--tls-ca "$PKI/ca.pem" --tls-server-name "$TLS_NAME")
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
read -r P_SINK P_PF P_DC_IMAP P_DC_POP3 P_DC_IMAPS P_DC_POP3S < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
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
    if [ "$TLS" = 1 ]; then
        # STARTTLS offered (not required) with the test certificate; session
        # resumption through tlsmgr's cache and tickets (Postfix's defaults
        # otherwise).
        cat >> "$etc/main.cf" <<EOF
smtpd_tls_security_level = may
smtpd_tls_chain_files = $PKI/server.key, $PKI/fullchain.pem
smtpd_tls_loglevel = 0
smtpd_tls_session_cache_database = btree:$WORK/postfix/data/smtpd_scache
EOF
    fi
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
    if [ "$TLS" = 1 ]; then echo "tlsmgr    unix  - - n 1000? 1 tlsmgr" >> "$etc/master.cf"; fi
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
    local ssl="ssl = no" imaps_port=0 pop3s_port=0 listener_ssl=
    if [ "$TLS" = 1 ]; then
        # The test certificate; IMAPS/POP3S listeners, STARTTLS/STLS offered
        # on the plain ports (the plain legs do not use it).
        ssl="ssl = yes
ssl_cert = <$PKI/fullchain.pem
ssl_key = <$PKI/server.key"
        imaps_port=$P_DC_IMAPS pop3s_port=$P_DC_POP3S listener_ssl="ssl = yes"
    fi
    cat > "$d/dovecot.conf" <<EOF
instance_name = ringmail-bench
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
$ssl
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
    address = 127.0.0.1
    port = $imaps_port
    $listener_ssl
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
    address = 127.0.0.1
    port = $pop3s_port
    $listener_ssl
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
    local top="cores = $CORES"
    if [ "$TLS" = 1 ]; then top+=$'\n'$(tls_toml "$PKI"); fi
    rm_config "$WORK/ringmail.toml" "$data" "$top" "$STORAGE_TOML"
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
# With CPU_PID=PID CPU_WINDOW="DELAY LEN", the CPUs that process used from
# DELAY to DELAY+LEN seconds after the start (loadgen's measured window: its
# warm-up, then its duration) go into the leg's meta.json as server_cpus.
lg() {
    local name=$1; shift
    local out=$RESULTS/$name
    local rc=0 cpu_job= cpu=null delay len
    if [ -n "${CPU_PID:-}" ]; then
        read -r delay len <<< "$CPU_WINDOW"
        ( sleep "$delay"; a=$(proc_cpu "$CPU_PID"); sleep "$len"; b=$(proc_cpu "$CPU_PID")
          python3 -c "print(round(($b - $a) / $len, 4))" > "$out.cpu" ) &
        cpu_job=$!
    fi
    timeout 300 "$LOADGEN" "$@" --json --plot "$out.svg" --no-progress --max-time 240 \
        > "$out.json" 2> "$out.stderr" || rc=$?
    if [ -n "$cpu_job" ]; then
        wait "$cpu_job" 2>/dev/null || true
        if [ -s "$out.cpu" ]; then cpu=$(cat "$out.cpu"); fi
        rm -f "$out.cpu"
    fi
    echo "{\"leg\":\"$name\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"exit\":$rc,\"server_cpus\":$cpu,$(psi_json)}" > "$out.meta.json"
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
t = j.get("tls")
hs = f" tls: full={t['handshakes_full']} resumed={t['handshakes_resumed']} {t['version']}" if t else ""
print(f"         msgs/s={j['messages_per_s']:.0f} sessions/s={j['sessions_per_s']:.0f}{cmd} errors={j['errors_total']}{ver}{hs}")
EOF
    return 0
}
# psi_json: the kernel's pressure stall figures (share of the last 10 s in
# which some task waited for IO / for a CPU), as JSON members.
psi_json() {
    local io cpu
    io=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/io 2>/dev/null)
    cpu=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null)
    printf '"io_pressure":%s,"cpu_pressure":%s' "${io:-null}" "${cpu:-null}"
}
# window DURATION: loadgen's measured window, "WARMUP DURATION-WARMUP" (its
# --duration includes the warm-up).
window() { awk -v w="$WARMUP" -v d="$1" 'BEGIN { print w, d - w }'; }
# Unmeasured helper runs (fill, drain, warm-up).
lg_quiet() { timeout 300 "$LOADGEN" "$@" --json --no-progress --max-time 240 > /dev/null 2>> "$RESULTS/helpers.stderr"; }

ACCTS=(--accounts "$ACCOUNTS" --account-pattern "$PATTERN")
SMTP_LOAD=(--connections $SMTP_CONNS --size $SIZE --duration "$SMTP_SECS" --warmup "$WARMUP" --messages 10000000 "${ACCTS[@]}")
POP3_LOAD=(--connections $POP3_CONNS --delete "${ACCTS[@]}" --password "$PASSWORD")
[ -z "${POP3_RATE:-}" ] || POP3_LOAD+=(--rate "$POP3_RATE")
IMAP_LOAD=(--connections $IMAP_CONNS --duration "$IMAP_SECS" --warmup "$WARMUP" "${ACCTS[@]}" --password "$PASSWORD"
           --mix 'login=1,select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1,logout=1')
# The same mix without login and logout: every connection keeps its session
# for the whole leg (the default mix reconnects every 15 commands or so).
IMAP_HELD_LOAD=(--connections $IMAP_CONNS --duration "$IMAP_SECS" --warmup "$WARMUP" "${ACCTS[@]}" --password "$PASSWORD"
           --mix 'select=5,fetch_headers=10,fetch_body=5,store=5,search=3,idle=1')

# -------------------------------------------------------------------- start
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "versions: $(postconf -d mail_version 2>/dev/null), dovecot $(dovecot --version), ringmail $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "cpu: $(lscpu | grep -E '^(Model name|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|Hypervisor vendor|L3 cache):' | sed 's/  */ /g' | paste -sd';' -)"
    echo "params: ACCOUNTS=$ACCOUNTS ROUNDS=$ROUNDS CORES=$CORES SMTP_SECS=$SMTP_SECS IMAP_SECS=$IMAP_SECS WARMUP=$WARMUP POP3_PER_ACCOUNT=$POP3_PER_ACCOUNT IMAP_PER_ACCOUNT=$IMAP_PER_ACCOUNT SIZE=$SIZE STORAGE_TOML=${STORAGE_TOML//$'\n'/; }"
    echo "tls: TLS=$TLS TLS_KEY=$TLS_KEY ($([ "$TLS_KEY" = rsa ] && echo RSA 2048 || echo ECDSA P-256) CA and server key, the same files for ringmail, Postfix and Dovecot) HS_SECS=$HS_SECS HS_ACCOUNTS=$HS_ACCOUNTS HS_CONNS=$HS_CONNS; $(openssl version)"
    echo "smtp: ${SMTP_LOAD[*]}"
    echo "pop3: ${POP3_LOAD[*]}"
    echo "imap: ${IMAP_LOAD[*]}"
    echo "uptime at start: $(uptime); pressure: {$(psi_json)}"
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

log "starting smtp-sink :$P_SINK, Postfix :$P_PF, Dovecot imap :$P_DC_IMAP pop3 :$P_DC_POP3$([ "$TLS" = 1 ] && echo " imaps :$P_DC_IMAPS pop3s :$P_DC_POP3S"), ringmail"
setup_postfix
setup_dovecot
start_ringmail
log "ringmail: smtp=$RM_SMTP pop3=$RM_POP3 imap=$RM_IMAP imaps=$RM_IMAPS pop3s=$RM_POP3S"
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
# postfix_leg NAME LABEL [LOADGEN ARGS...] / ringmail_smtp_leg NAME LABEL [ARGS...]:
# one SMTP leg of round $r with the shared load plus ARGS, verified; ringmail's
# CPU is sampled over the measured window, and its mailboxes are emptied after.
postfix_leg() {
    local name=$1 label=$2; shift 2
    log " round $r: Postfix $label (load $(cut -d' ' -f1 /proc/loadavg))"
    clear_maildirs
    lg "$name-r$r" smtp --target 127.0.0.1:$P_PF "${SMTP_LOAD[@]}" "$@" \
        --verify --verify-pop3 127.0.0.1:$P_DC_POP3 --password "$PASSWORD" --verify-wait 3
    wait_postfix_drained
}
ringmail_smtp_leg() {
    local name=$1 label=$2; shift 2
    log " round $r: ringmail $label (load $(cut -d' ' -f1 /proc/loadavg))"
    CPU_PID=$RM_PID CPU_WINDOW=$(window "$SMTP_SECS") lg "$name-r$r" smtp --target "$RM_SMTP" "${SMTP_LOAD[@]}" "$@" \
        --verify --verify-pop3 "$RM_POP3" --password "$PASSWORD"
    lg_quiet pop3 --target "$RM_POP3" "${POP3_LOAD[@]}"
}
log "SMTP: ${ROUNDS} rounds of smtp-sink, Postfix, ringmail$([ "$TLS" = 1 ] && echo ", then Postfix and ringmail with STARTTLS, and both with a connection per message, plain and STARTTLS") (${SMTP_SECS}s each, +${WARMUP}s warm-up)"
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
    CPU_PID=$RM_PID CPU_WINDOW=$(window "$SMTP_SECS") lg ringmail-smtp-r$r smtp --target "$RM_SMTP" "${SMTP_LOAD[@]}" \
        --verify --verify-pop3 "$RM_POP3" --password "$PASSWORD"
    # Empty ringmail's mailboxes again (unmeasured) so later verifications
    # only read their own round.
    lg_quiet pop3 --target "$RM_POP3" "${POP3_LOAD[@]}"

    if [ "$TLS" = 1 ]; then
        # STARTTLS on the same connections (EHLO, STARTTLS, EHLO, then every
        # message on it); --verify reads back over POP3 with STLS.
        postfix_leg postfix-tls STARTTLS --starttls "${TLS_ARGS[@]}"
        ringmail_smtp_leg ringmail-smtp-tls STARTTLS --starttls "${TLS_ARGS[@]}"
        # A connection per message (--reuse 1), plain, then STARTTLS (each
        # handshake resumes the session of an earlier one when the server
        # allows it).
        postfix_leg postfix-1c "connection per message" --reuse 1
        ringmail_smtp_leg ringmail-smtp-1c "connection per message" --reuse 1
        postfix_leg postfix-tls-1c "STARTTLS, connection per message" --reuse 1 --starttls "${TLS_ARGS[@]}"
        ringmail_smtp_leg ringmail-smtp-tls-1c "STARTTLS, connection per message" --reuse 1 --starttls "${TLS_ARGS[@]}"
    fi
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

    if [ "$TLS" = 1 ]; then
        # The same over POP3S (implicit TLS), a connection per session.
        fill_maildirs "$POP3_PER_ACCOUNT"
        log " round $r: dovecot POP3S (load $(cut -d' ' -f1 /proc/loadavg))"
        lg dovecot-pop3s-r$r pop3 --target 127.0.0.1:$P_DC_POP3S --tls "${TLS_ARGS[@]}" "${POP3_LOAD[@]}"
        clear_maildirs

        lg_quiet smtp --target "$RM_SMTP" --connections $SMTP_CONNS --size $SIZE \
            --messages $((ACCOUNTS * POP3_PER_ACCOUNT)) "${ACCTS[@]}"
        log " round $r: ringmail POP3S (load $(cut -d' ' -f1 /proc/loadavg))"
        lg ringmail-pop3s-r$r pop3 --target "$RM_POP3S" --tls "${TLS_ARGS[@]}" "${POP3_LOAD[@]}"
    fi
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
        CPU_PID=$RM_PID CPU_WINDOW=$(window "$IMAP_SECS") lg ringmail-imap-r$r imap --target "$RM_IMAP" "${IMAP_LOAD[@]}"
    fi
    if [ "$TLS" = 1 ]; then
        # The same mix over IMAPS (implicit TLS; LOGOUT and LOGIN reconnect).
        log " round $r: dovecot IMAPS (load $(cut -d' ' -f1 /proc/loadavg))"
        lg dovecot-imaps-r$r imap --target 127.0.0.1:$P_DC_IMAPS --tls "${TLS_ARGS[@]}" "${IMAP_LOAD[@]}"
        if [ -n "$RM_IMAP_OK" ]; then
            log " round $r: ringmail IMAPS (load $(cut -d' ' -f1 /proc/loadavg))"
            CPU_PID=$RM_PID CPU_WINDOW=$(window "$IMAP_SECS") lg ringmail-imaps-r$r imap --target "$RM_IMAPS" --tls "${TLS_ARGS[@]}" "${IMAP_LOAD[@]}"
            # TLS against plain with sessions held (no reconnects).
            log " round $r: ringmail, sessions held, IMAP then IMAPS (load $(cut -d' ' -f1 /proc/loadavg))"
            CPU_PID=$RM_PID CPU_WINDOW=$(window "$IMAP_SECS") lg ringmail-imap-held-r$r imap --target "$RM_IMAP" "${IMAP_HELD_LOAD[@]}"
            CPU_PID=$RM_PID CPU_WINDOW=$(window "$IMAP_SECS") lg ringmail-imaps-held-r$r imap --target "$RM_IMAPS" --tls "${TLS_ARGS[@]}" "${IMAP_HELD_LOAD[@]}"
        fi
    fi
done

# ------------------------------------------------------ TLS handshakes/core
# A second ringmail with one executor (cores = 1), the same certificate and
# HS_ACCOUNTS accounts (their passwords checked once, unmeasured). POP3
# sessions with a connection each (USER/PASS, STAT, LIST, UIDL, QUIT on an
# empty mailbox, --max-retr 0), HS_CONNS at a time for HS_SECS: plain POP3,
# POP3S with every handshake full (--tls-resume off), POP3S resuming
# (--tls-resume on). The server's CPU time over the measured window gives
# sessions per CPU-second; the TLS legs minus the plain one give the
# handshake's own cost.
if [ "$TLS" = 1 ]; then
    rm_stop
    data1=$WORK/ringmail-1core-data
    "$RINGMAIL" account bulk --data "$data1" --pattern "$PATTERN" --count "$HS_ACCOUNTS" < "$WORK/password" >/dev/null \
        || die "ringmail account bulk (1 core) failed"
    rm_config "$WORK/ringmail-1core.toml" "$data1" "cores = 1"$'\n'"$(tls_toml "$PKI")" "$STORAGE_TOML"
    echo "--- ringmail, cores = 1 (handshake legs)" >> "$WORK/ringmail.log"
    rm_start "$RINGMAIL" "$WORK/ringmail-1core.toml" "$WORK/ringmail-1core.ready" "$WORK/ringmail.log" \
        || die "ringmail (cores = 1) did not start (see $WORK/ringmail.log)"
    HS_ACCTS=(--accounts "$HS_ACCOUNTS" --account-pattern "$PATTERN" --password "$PASSWORD")
    lg_quiet pop3 --target "$RM_POP3" --connections "$HS_CONNS" --max-retr 0 "${HS_ACCTS[@]}" \
        || die "ringmail (cores = 1) POP3 warm-up failed"
    HS_LOAD=(--connections "$HS_CONNS" --max-retr 0 --duration "$HS_SECS" --warmup "$WARMUP" "${HS_ACCTS[@]}")
    log "TLS handshakes: ${ROUNDS} rounds of plain POP3, POP3S full, POP3S resumed on ringmail with cores = 1 (${HS_SECS}s each)"
    for r in $(seq "$ROUNDS"); do
        log " round $r: plain, full, resumed (load $(cut -d' ' -f1 /proc/loadavg))"
        CPU_PID=$RM_PID CPU_WINDOW=$(window "$HS_SECS") lg hs-plain-r$r pop3 --target "$RM_POP3" "${HS_LOAD[@]}"
        CPU_PID=$RM_PID CPU_WINDOW=$(window "$HS_SECS") lg hs-full-r$r pop3 --target "$RM_POP3S" --tls "${TLS_ARGS[@]}" \
            --tls-resume off "${HS_LOAD[@]}"
        CPU_PID=$RM_PID CPU_WINDOW=$(window "$HS_SECS") lg hs-resumed-r$r pop3 --target "$RM_POP3S" --tls "${TLS_ARGS[@]}" \
            --tls-resume on "${HS_LOAD[@]}"
    done
fi

echo "uptime at end: $(uptime); pressure: {$(psi_json)}" >> "$RESULTS/machine.txt"
log "done in $(( $(date +%s) - START_TS )) s; summary:"
python3 "$ROOT/bench/scripts/summarize.py" "$RESULTS" | tee "$RESULTS/summary.txt"
