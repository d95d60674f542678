# Shared by the benchmark scripts (source it): a ringmail configuration for
# benchmarks, and starting the server.

# rm_config FILE DATA_DIR [TOP-LEVEL TOML] [STORAGE TOML]
# Every listener on 127.0.0.1:0 (the ports come from the ready line), no demo
# accounts, and a per-address connection limit above any load generator's.
rm_config() {
    local file=$1 data=$2 top=${3:-} storage=${4:-}
    cat > "$file" <<TOML
data_dir = "$data"
demo_accounts = []
$top
[listen]
smtp = ["127.0.0.1:0"]
pop3 = ["127.0.0.1:0"]
imap = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
imaps = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
http = ["127.0.0.1:0"]
[limits]
connections_per_address_max = 2000
[storage]
$storage
TOML
}

# rm_start BINARY CONFIG READY_FILE LOG_FILE
# Starts `BINARY serve --config CONFIG` in the background (stderr appended to
# LOG_FILE) and waits up to 10 s for its ready line. Sets RM_PID, and RM_SMTP,
# RM_POP3, RM_IMAP, RM_SUBMISSIONS, RM_IMAPS, RM_POP3S (host:port of the first
# address). Returns 1 if it did not get ready.
rm_start() {
    local bin=$1 config=$2 ready=$3 log=$4
    : > "$ready"
    "$bin" serve --config "$config" > "$ready" 2>> "$log" &
    RM_PID=$!
    for _ in $(seq 200); do grep -q '^ringmail: ready' "$ready" && break; sleep 0.05; done
    grep -q '^ringmail: ready' "$ready" || return 1
    RM_SMTP=$(grep -o 'smtp=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
    RM_POP3=$(grep -o 'pop3=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
    RM_IMAP=$(grep -o 'imap=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
    RM_SUBMISSIONS=$(grep -o 'submissions=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
    RM_IMAPS=$(grep -o 'imaps=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
    RM_POP3S=$(grep -o 'pop3s=[^ ]*' "$ready" | cut -d= -f2 | cut -d, -f1)
}

# rm_stop: SIGTERM the server started by rm_start and wait for it.
rm_stop() {
    [ -n "${RM_PID:-}" ] || return 0
    kill -TERM "$RM_PID" 2>/dev/null || true
    wait "$RM_PID" 2>/dev/null || true
    RM_PID=
}

# tls_pki DIR [ec|rsa]
# A test CA and a server certificate it signed, for the name
# mail.bench.test (and IP 127.0.0.1), with openssl: ec (default) is ECDSA
# P-256 for both, rsa is RSA 2048. Writes DIR/ca.pem (the trust anchor for
# loadgen --tls-ca), DIR/server.key (PKCS#8) and DIR/fullchain.pem (leaf,
# then the CA). The same files serve ringmail, Postfix and Dovecot.
TLS_NAME=mail.bench.test
tls_pki() {
    local dir=$1 kind=${2:-ec}
    local alg
    mkdir -p "$dir"
    case $kind in
        ec) alg=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256) ;;
        rsa) alg=(-algorithm RSA -pkeyopt rsa_keygen_bits:2048) ;;
        *) echo "tls_pki: key type $kind is neither ec nor rsa" >&2; return 1 ;;
    esac
    openssl genpkey "${alg[@]}" -out "$dir/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=ringmail bench test CA" -days 30 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.pem" 2>/dev/null
    openssl genpkey "${alg[@]}" -out "$dir/server.key" 2>/dev/null
    openssl req -new -key "$dir/server.key" -subj "/CN=$TLS_NAME" -out "$dir/server.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$TLS_NAME,IP:127.0.0.1" > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 30 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
    cat "$dir/server.pem" "$dir/ca.pem" > "$dir/fullchain.pem"
    chmod 600 "$dir/ca.key" "$dir/server.key"
    [ -s "$dir/fullchain.pem" ] && [ -s "$dir/server.key" ]
}

# tls_toml DIR: ringmail's top-level lines for the tls_pki certificate.
tls_toml() {
    printf 'hostname = "%s"\n[tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_NAME" "$1/fullchain.pem" "$1/server.key"
}

# proc_cpu PID: user+system CPU seconds the process (all threads) used so far.
proc_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# free_port: a free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# cluster_builds ROOT: what the cluster benchmarks run, release builds of
# ringmail with --features cluster and of loadgen (skipped with
# SKIP_BUILD=1), and etcd on the PATH. Sets BIN and LOADGEN.
cluster_builds() {
    local root=$1 target=${CARGO_TARGET_DIR:-$1/target}
    BIN=$target/release/ringmail
    LOADGEN=$target/release/loadgen
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        cargo build --release -q -p ringmail --features cluster --manifest-path "$root/Cargo.toml"
        cargo build --release -q -p loadgen --manifest-path "$root/Cargo.toml"
    fi
    command -v etcd >/dev/null || { echo "needs etcd (etcd-server)" >&2; exit 1; }
}

# etcd_start DIR: a one-member etcd on free loopback ports, its data in DIR
# and its log in DIR.log. Sets ETCD (the process) and ETCD_CLIENT (the
# client port).
etcd_start() {
    local dir=$1 peer
    ETCD_CLIENT=$(free_port); peer=$(free_port)
    etcd --name b --data-dir "$dir" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "b=http://127.0.0.1:$peer" >"$dir.log" 2>&1 &
    ETCD=$!
    sleep 1
}
