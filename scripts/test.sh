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

# The dashboard is what its generator builds; the alert rules load and pass
# their unit tests. (proxy/tests/monitoring.rs runs them against Prometheus.)
echo "== monitoring: dashboard, alert rules"
python3 k8s/monitoring/dashboard.py --check
promtool check rules k8s/monitoring/alerts.yaml
(cd k8s/monitoring && promtool test rules alerts.test.yaml)

echo "== hadolint Dockerfile.*"
hadolint Dockerfile.proxy Dockerfile.app

# Both images built with a real engine, then the README's container flow:
# docker run of each, compose with three replicas (scripts/container-test.sh).
# It needs root for the engine; elsewhere it says so and is skipped.
echo "== containers"
if [ "$(id -u)" = 0 ]; then
    bash scripts/container-test.sh
else
    echo "skipped: scripts/container-test.sh needs root (podman, debootstrap)"
fi

# The README's main command as a newcomer runs it (release builds, edge-proxy
# with its profile-guided optimisation), checked against the README's curl session.
echo "== run-local.sh"
bash scripts/run-local-check.sh

# Short runs of the fuzz targets (config loader, cookie decoder, route lookup)
# from the corpus in fuzz/corpus: a crash fails the run.
echo "== fuzz smoke"
bash scripts/fuzz-smoke.sh

# The patched pingora-http's own unit tests (it builds as a dependency, not a member).
echo "== cargo test: third_party/pingora-http"
cargo test --manifest-path third_party/pingora-http/Cargo.toml --target-dir target/third_party

echo "== cargo test"
cargo test --workspace --locked
