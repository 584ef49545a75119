#!/usr/bin/env bash
# Control-plane cost at cluster size: a release edge-proxy against the stand-in
# API server (proxy/tests/utils/kube_api.rs) with N Services, each with an
# Ingress and an EndpointSlice, for N = 100, 1 000 and 10 000 (SCALE_SIZES).
# Prints a Markdown table: time until every host routes (each answered 200 by
# a real hello-app), RSS then, CPU per EndpointSlice update, CPU per Ingress
# update. About 5 minutes. All traffic on 127.0.0.0/8. The last recorded run, with
# its before/after, is bench/scale.md (appended to bench/results.md by run.py).
#
#   bash bench/scale.sh
#   SCALE_SIZES="100 1000" bash bench/scale.sh
#   EDGE_PROXY_BIN=/path/to/other/edge-proxy bash bench/scale.sh   # an A/B
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-release.sh edge-proxy hello-app >/dev/null 2>&1
proxy=${EDGE_PROXY_BIN:-target/release/edge-proxy}
# The driver only feeds the stand-in API server: a debug build is plenty.
cargo run --quiet --example scale -- "$proxy" target/release/hello-app ${SCALE_SIZES:-100 1000 10000}
