#!/usr/bin/env bash
# Runs the main job: three hello-app instances and edge-proxy in front of them on
# examples/local.yaml (static discovery). Ctrl-C stops everything.
#   curl -i http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-release.sh edge-proxy hello-app
bin=target/release

pids=()
cleanup() {
    trap - EXIT INT TERM
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
    POD_NAME="hello-app-$i" "$bin/hello-app" --listen "127.0.0.1:808$i" &
    pids+=($!)
done
"$bin/edge-proxy" --config examples/local.yaml &
pids+=($!)

echo "edge-proxy on http://127.0.0.1:8080/ (admin http://127.0.0.1:9901/readyz); Ctrl-C stops"
# Exit (and stop the rest) as soon as any process dies.
wait -n "${pids[@]}"
