#!/usr/bin/env bash
# A short run of every fuzz target from its corpus in fuzz/corpus (a smoke
# test, not a campaign): FUZZ_SECONDS each, 30 by default.
#   bash scripts/fuzz-smoke.sh [target ...]
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run; replay
# it with `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(config cookie routing); fi

for target in "${targets[@]}"; do
    # New inputs go to a scratch directory; the committed corpus is only read.
    scratch=$(mktemp -d)
    log="$scratch.log"
    echo "== fuzz $target (${seconds}s)"
    # No sanitizer: the code is safe Rust, and without -Zsanitizer a stable
    # toolchain builds the coverage-instrumented target.
    if ! cargo fuzz run -s none "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz $target failed: the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$log" || tail -n 3 "$log"
    rm -rf "$scratch" "$log"
done
