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

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the packaged daemons; the benchmark runs its own.
systemctl stop nginx haproxy 2>/dev/null || true

bash scripts/build-release.sh edge-proxy hello-app >/dev/null 2>&1
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 bench/flood.py
