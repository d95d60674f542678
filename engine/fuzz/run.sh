#!/usr/bin/env bash
# Run every fuzz target (or the ones named) for a bounded time on its seed
# corpus; exit non-zero if any target crashes, panics, leaks past the memory
# limit or hangs. Usage: engine/fuzz/run.sh [SECONDS-PER-TARGET] [TARGET...]
#
# Built with the machine's stable toolchain (RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its nightly-only flags), without a sanitizer and without
# optimisation: ringmail is safe Rust, so AddressSanitizer adds little, and
# an unoptimised build compiles in about half the time of the default
# optimised one, which is what a short run needs (figures in README.md).
# Set FUZZ_BUILD="-O" for an optimised build in long local runs.
set -euo pipefail
secs=${1:-60}
shift || true
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz missing: cargo install --locked cargo-fuzz --version 0.13.2" >&2
    exit 1
fi
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
build=(-s none ${FUZZ_BUILD:---dev} --target-dir "$target_dir")
if (($#)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build "${build[@]}"
failed=()
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus, so the committed seeds stay as they are.
    work="$target_dir/corpus/$t"
    mkdir -p "$work"
    echo "== fuzz $t for ${secs}s"
    if ! cargo fuzz run "${build[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 2>&1 | { grep -v '^#[0-9]' || true; }; then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "run.sh: crashes in: ${failed[*]} (inputs under engine/fuzz/artifacts/)" >&2
    exit 1
fi
