#!/usr/bin/env bash
# Per-client limits under a flood (edge-proxy without and with the limit,
# nginx's limit_req, HAProxy's stick table) and edge-proxy's memory with a
# million distinct client addresses. About 5 minutes; bench/flood.{md,json}.
#
#   bash bench/flood.sh
#   BENCH_SECONDS=5 BENCH_DISTINCT_CLIENTS=100000 bash bench/flood.sh   # a quick look
#   BENCH_PROXIES="edge-proxy, limit" BENCH_EDGE_PROXY=OTHER_BINARY BENCH_OUT=/tmp/ab \
#     python3 bench/flood.py          # one proxy, another build: an A/B
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/prepare.sh
exec python3 bench/flood.py
