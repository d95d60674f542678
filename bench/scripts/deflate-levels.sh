#!/usr/bin/env bash
# What COMPRESS=DEFLATE's level and backend give on the FETCH stream of
# imap-compress.sh: the same MESSAGES generated mails framed as
# `* n FETCH (BODY[] {len}` responses, deflated with a sync flush after each
# response (as ringmail's Conn::write_all does per write), by flate2 (the
# version in Cargo.lock) on its miniz_oxide backend (ringmail's) and on
# zlib-rs, and by Python's zlib (C zlib); ratio and single-core speed
# (the fastest of three runs).
#
# Usage: bench/scripts/deflate-levels.sh
# Environment: MESSAGES [2000]  LEVELS ["1 2 3 6"]
# Builds a throw-away crate in a temporary directory (cargo, offline when
# the registry cache has flate2) and removes it.
set -euo pipefail
MESSAGES=${MESSAGES:-2000}
LEVELS=${LEVELS:-1 2 3 6}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FLATE2=$(grep -A1 '^name = "flate2"' "$ROOT/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
WORK=$(mktemp -d /tmp/deflate-levels.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

python3 - "$ROOT/bench/scripts" "$MESSAGES" "$WORK/stream" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from imap_compress_bench import mails
with open(sys.argv[3], "wb") as f:
    for i, m in enumerate(mails(int(sys.argv[2]), "reader@example.test"), 1):
        f.write(b"* %d FETCH (BODY[] {%d}\r\n%s)\r\n" % (i, len(m), m))
PY

mkdir -p "$WORK/probe/src"
cat > "$WORK/probe/Cargo.toml" <<TOML
[package]
name = "deflate-probe"
version = "0.1.0"
edition = "2021"
[workspace]
[dependencies]
flate2 = { version = "=$FLATE2", default-features = false }
[features]
miniz = ["flate2/rust_backend"]
zlibrs = ["flate2/zlib-rs"]
TOML
cat > "$WORK/probe/src/main.rs" <<'RS'
use flate2::{Compress, Compression, FlushCompress};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).unwrap();
    // Response boundaries: a line starting with "* <digit>" after a CRLF.
    let mut cuts = vec![0];
    cuts.extend((2..data.len() - 2).filter(|&i| {
        data[i - 1] == b'\n' && data[i] == b'*' && data[i + 1] == b' ' && data[i + 2].is_ascii_digit()
    }));
    cuts.push(data.len());
    for level in args[2..].iter().map(|l| l.parse::<u32>().unwrap()) {
      let (mut total, mut secs) = (0, f64::MAX);
      for _ in 0..3 {  // the fastest of three runs
        let mut z = Compress::new(Compression::new(level), false);
        let mut out = Vec::new();
        total = 0;
        let t = Instant::now();
        for w in cuts.windows(2) {
            let mut rest = &data[w[0]..w[1]];
            loop {
                out.clear();
                out.reserve(rest.len() + 4096);
                let before = z.total_in();
                z.compress_vec(rest, &mut out, FlushCompress::Sync).unwrap();
                rest = &rest[(z.total_in() - before) as usize..];
                total += out.len();
                if rest.is_empty() && out.len() < out.capacity() {
                    break;
                }
            }
        }
        secs = secs.min(t.elapsed().as_secs_f64());
      }
        println!("| {} | {level} | {:.3} | {:.0} |", args[0].rsplit('/').next().unwrap(),
                 total as f64 / data.len() as f64, data.len() as f64 / secs / 1e6);
    }
}
RS
echo "$(stat -c %s "$WORK/stream") octets in $MESSAGES FETCH responses; flate2 $FLATE2"
echo "| deflater | level | compressed / plain | MB/s (plain) |"
echo "|---|---:|---:|---:|"
for backend in miniz zlibrs; do
    (cd "$WORK/probe" && CARGO_TARGET_DIR="$WORK/target-$backend" cargo build -q --release --offline \
        --features "$backend" 2>/dev/null || CARGO_TARGET_DIR="$WORK/target-$backend" cargo build -q --release --features "$backend")
    cp "$WORK/target-$backend/release/deflate-probe" "$WORK/flate2-$backend"
    "$WORK/flate2-$backend" "$WORK/stream" $LEVELS
done
python3 - "$WORK/stream" $LEVELS <<'PY'
import re, sys, time, zlib
data = open(sys.argv[1], "rb").read()
cuts = [0] + [m.start() + 2 for m in re.finditer(rb"\r\n\* \d", data)] + [len(data)]
for level in map(int, sys.argv[2:]):
    secs = float("inf")
    for _ in range(3):  # the fastest of three runs
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
        t = time.perf_counter()
        total = sum(len(z.compress(data[a:b])) + len(z.flush(zlib.Z_SYNC_FLUSH)) for a, b in zip(cuts, cuts[1:]))
        secs = min(secs, time.perf_counter() - t)
    print("| Python zlib %s | %d | %.3f | %.0f |" % (zlib.ZLIB_RUNTIME_VERSION, level, total / len(data), len(data) / secs / 1e6))
PY
