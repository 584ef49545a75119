#!/usr/bin/env bash
# Builds the release binaries into target/release. The one build command that
# the Dockerfiles and run-local.sh use; CI builds it inside the images
# (scripts/container-test.sh).
#   bash scripts/build-release.sh [PACKAGE...]    (default: edge-proxy hello-app)
set -euo pipefail
cd "$(dirname "$0")/.."
packages=("$@")
((${#packages[@]})) || packages=(edge-proxy hello-app)
args=()
for p in "${packages[@]}"; do args+=(-p "$p"); done
cargo build --release --locked "${args[@]}"
