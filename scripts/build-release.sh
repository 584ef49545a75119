#!/usr/bin/env bash
# Builds the release binaries into target/release. The one build command that
# the Dockerfiles and run-local.sh use; CI builds it inside the images
# (scripts/container-test.sh).
#   bash scripts/build-release.sh [PACKAGE...]    (default: edge-proxy hello-app)
# edge-proxy is optimised with the profile in proxy/pgo/ (scripts/pgo-flags.sh
# says when not; EDGE_PROXY_PGO=off builds it without). Its dependencies are
# compiled with that profile too, so it builds in target/pgo, apart from
# hello-app's, and is copied into target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=("$@")
((${#packages[@]})) || packages=(edge-proxy hello-app)
pgo=
if [[ " ${packages[*]} " == *" edge-proxy "* ]]; then
    bash scripts/build-deps.sh
    pgo=$(bash scripts/pgo-flags.sh)
fi
args=()
for p in "${packages[@]}"; do
    [ "$p" = edge-proxy ] && [ -n "$pgo" ] || args+=(-p "$p")
done
((${#args[@]} == 0)) || cargo build --release --locked "${args[@]}"
if [ -n "$pgo" ]; then
    RUSTFLAGS="$pgo${RUSTFLAGS:+ $RUSTFLAGS}" cargo build --release --locked -p edge-proxy --target-dir target/pgo
    mkdir -p target/release
    # A rename, so that a running target/release/edge-proxy is not written over.
    cp target/pgo/release/edge-proxy target/release/.edge-proxy.new
    mv -f target/release/.edge-proxy.new target/release/edge-proxy
fi
