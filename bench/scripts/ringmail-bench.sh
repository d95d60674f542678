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
[limits]
connections_per_address_max = 2000
[storage]
$storage
TOML
}

# rm_start BINARY CONFIG READY_FILE LOG_FILE
# Starts `BINARY serve --config CONFIG` in the background (stderr appended to
# LOG_FILE) and waits up to 10 s for its ready line. Sets RM_PID, and RM_SMTP,
# RM_POP3, RM_IMAP (host:port of the first address). Returns 1 if it did not
# get ready.
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
}

# rm_stop: SIGTERM the server started by rm_start and wait for it.
rm_stop() {
    [ -n "${RM_PID:-}" ] || return 0
    kill -TERM "$RM_PID" 2>/dev/null || true
    wait "$RM_PID" 2>/dev/null || true
    RM_PID=
}
