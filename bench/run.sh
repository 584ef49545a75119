#!/usr/bin/env bash
# Benchmark: edge-proxy side by side with nginx and HAProxy (Debian's packages),
# each in front of the same three hello-app instances, in the same run.
#
#   bash bench/run.sh                  # about 7 minutes; bench/results.{md,json}
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 bash bench/run.sh    # a quick look
#
# Scenarios: plain proxying at 1, 64 and 512 connections (BENCH_CONNECTIONS),
# access log on, cookie affinity with access log on, and memory with 10 000
# idle keep-alive client connections (BENCH_IDLE_CONNECTIONS). See run.py.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v strace >/dev/null || need+=(strace)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the packaged daemons; the benchmark runs its own.
systemctl stop nginx haproxy 2>/dev/null || true

bash scripts/build-release.sh edge-proxy hello-app >/dev/null 2>&1
cargo build --release --locked -p edge-proxy --example bare_pingora >/dev/null 2>&1
# 512 wrk connections and 10 000 idle ones, each a file descriptor.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 bench/run.py
