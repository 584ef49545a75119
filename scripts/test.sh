#!/usr/bin/env bash
# The test command: installs what is missing, then lints and runs every test.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ci-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== hadolint Dockerfile.*"
hadolint Dockerfile.proxy Dockerfile.app

# The images' build command (scripts/build-release.sh), so CI exercises what
# the Dockerfiles run; also checks the release binaries' sizes.
echo "== release build (as in Dockerfile.proxy / Dockerfile.app)"
bash scripts/build-release.sh
ls -l target/release/edge-proxy target/release/hello-app

echo "== cargo test"
cargo test --workspace --locked
