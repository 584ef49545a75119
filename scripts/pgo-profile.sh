#!/usr/bin/env bash
# Records the profile edge-proxy's release build is optimised with
# (proxy/pgo/edge-proxy.profdata.xz; README, "Profile-guided build"): an
# instrumented build serves bench/pgo_train.py's traffic, and what it counted is
# merged. Run it after a change to the request path, and commit the profile with
# the change: a function changed since the profile was recorded is built as if
# unprofiled. About 12 min: the instrumented build, then a minute of training.
#   bash scripts/pgo-profile.sh
# Needs rustup's llvm-tools component (llvm-profdata of the compiler's own
# LLVM), wrk and curl (bench/prepare.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl taskset openssl python3 xz; do
    command -v "$tool" >/dev/null || { echo "needs $tool (bench/prepare.sh installs it)" >&2; exit 1; }
done
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
[ -x "$profdata" ] || rustup component add llvm-tools
work=$PWD/target/pgo-generate
rm -rf "$work/training"
# The build's own scripts are instrumented too and leave their profiles in
# profiles/; the training's go to training/, the only ones merged.
RUSTFLAGS="-Cprofile-generate=$work/profiles" \
    cargo build --release --locked -p edge-proxy --target-dir "$work"
cargo build --release --locked -p hello-app   # the training's backends
cargo build --locked --example fake_api        # its Ingresses and HTTPRoutes
LLVM_PROFILE_FILE="$work/training/edge-%p.profraw" python3 bench/pgo_train.py "$work/release/edge-proxy"
# Every function, the ones the training never ran included: the profile marks
# them cold and they are optimised for size (a sparse profile leaves them out,
# and they are built as without a profile: 19.3 MB instead of 16.2).
"$profdata" merge -o "$work/edge-proxy.profdata" "$work"/training/*.profraw
xz -9 -c "$work/edge-proxy.profdata" >proxy/pgo/edge-proxy.profdata.xz
rustc -vV | sed -n 's/^LLVM version: //p' >proxy/pgo/llvm-version
ls -l proxy/pgo/
