#!/usr/bin/env bash
# The test command: installs what is missing, then lints and runs every test.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ci-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The library without the proxy (what the fuzz targets build) and the fuzz targets.
cargo clippy -p edge-proxy --no-default-features --lib --locked -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --locked -- -D warnings

echo "== hadolint Dockerfile.*"
hadolint Dockerfile.proxy Dockerfile.app

# The images' build command (scripts/build-release.sh), so CI exercises what
# the Dockerfiles run; also checks the release binaries' sizes.
echo "== release build (as in Dockerfile.proxy / Dockerfile.app)"
bash scripts/build-release.sh
ls -l target/release/edge-proxy target/release/hello-app

# Short runs of the fuzz targets (config loader, cookie decoder, route lookup)
# from the corpus in fuzz/corpus: a crash fails the run.
echo "== fuzz smoke"
bash scripts/fuzz-smoke.sh

echo "== cargo test"
cargo test --workspace --locked
