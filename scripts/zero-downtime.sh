#!/usr/bin/env bash
# Zero-downtime check under load: wrk drives edge-proxy in front of three
# hello-app instances for SECONDS while this script
#   - rewrites the config ten times the way the kubelet updates a ConfigMap
#     volume (new ..TIMESTAMP dir, one rename of ..data), one version invalid;
#   - restarts one hello-app with SIGTERM;
#   - replaces the proxy: a second edge-proxy binds the same port
#     (SO_REUSEPORT), then the first gets SIGTERM.
# It prints the totals and exits non-zero on any socket error or non-2xx.
#
# It runs in a network namespace of its own (unshare, needs root), with
# net.ipv4.tcp_migrate_req=1 there: when the old proxy closes its listener,
# connections still in its accept queue move to the new proxy's socket
# instead of being reset. That is the node setting the DaemonSet relies on.
#
#   usage: bash scripts/zero-downtime.sh [BIN_DIR] [SECONDS]
#   BIN_DIR defaults to target/release (build with `cargo build --release`).
set -euo pipefail

if [ -z "${ZD_IN_NETNS:-}" ]; then
    exec unshare --net env ZD_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
# ZD_MIGRATE_REQ=0 shows what happens without it.
sysctl -qw net.ipv4.tcp_migrate_req="${ZD_MIGRATE_REQ:-1}"

bin=$(cd "${1:-target/release}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${2:-15}
work=$(mktemp -d)
cfg="$work/config"
mkdir "$cfg"
port=18080
admin=19901
pids=()
cleanup() {
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The kubelet's atomic writer: stdin becomes the new proxy.yaml.
kubelet_write() { bash "$repo/scripts/kubelet-write.sh" "$cfg"; }

# Version N of the config: the catch-all route stays; N adds a route of its own,
# toggles affinity, and version 5 is invalid (port out of range).
config() {
    local n=$1 bad_port=8080 affinity=""
    [ "$n" = 5 ] && bad_port=99999
    [ $((n % 2)) = 1 ] && affinity=$'\n    affinity: { cookie: route }'
    cat <<YAML
listen:
  http: "127.0.0.1:$port"
admin: "127.0.0.1:$admin"
discovery: static
drain_timeout: 2s
logging: { format: text, access: off }
routes:
  - service: hello-app
    port: 8080$affinity
  - host: v$n.test
    service: hello-app
    port: $bad_port
static:
  hello-app: ["127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"]
YAML
}

wait_port() { # wait until ADDR:PORT accepts, at most 10 s
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

listeners() { ss -Hltn "sport = :$port" | wc -l; }

declare -A app
start_app() {
    POD_NAME="hello-app-$1" "$bin/hello-app" --listen "127.0.0.1:1808$1" 2>>"$work/apps.log" &
    app[$1]=$!
    pids+=($!)
    wait_port "1808$1"
}
for i in 1 2 3; do start_app "$i"; done

config 0 | kubelet_write
"$bin/edge-proxy" --config "$cfg/proxy.yaml" >/dev/null 2>"$work/proxy-a.log" &
proxy_a=$!
pids+=("$proxy_a")
wait_port "$port"
wait_port "$admin"

# ZD_CLOSE=1: a new connection per request, which keeps the accept queue busy.
wrk_args=()
[ "${ZD_CLOSE:-}" = 1 ] && wrk_args=(-H "Connection: close")
wrk -t2 -c32 -d"${secs}s" "${wrk_args[@]}" "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
step=$(awk "BEGIN { print ($secs - 3) / 10 }")

failures_seen=""
for n in $(seq 1 10); do
    sleep "$step"
    config "$n" | kubelet_write
    case "${ZD_SKIP:-}:$n" in
    *proxy*:7 | *app*:3) ;;
    *:3) # Restart one app with SIGTERM: it drains, exits, comes back on its port.
        kill -TERM "${app[2]}"
        wait "${app[2]}" || { echo "hello-app-2 exited non-zero on SIGTERM" >&2; exit 1; }
        start_app 2
        ;;
    *:6) # The invalid version 5 was rejected and counted by proxy A.
        failures_seen=$(curl -s "http://127.0.0.1:$admin/metrics" |
            awk '/^edge_proxy_config_reloads_total\{result="failure"\}/ { print $2 }')
        ;;
    *:7) # Replace the proxy: B binds beside A, then A drains and exits.
        "$bin/edge-proxy" --config "$cfg/proxy.yaml" >/dev/null 2>"$work/proxy-b.log" &
        proxy_b=$!
        pids+=("$proxy_b")
        for _ in $(seq 100); do [ "$(listeners)" -ge 2 ] && break; sleep 0.1; done
        [ "$(listeners)" -ge 2 ] || { echo "proxy B did not bind beside A" >&2; exit 1; }
        kill -TERM "$proxy_a"
        ;;
    esac
done

wait "$wrk_pid"
# Reloads applied by the proxy serving at the end (B, or A when not replaced).
b_reloads=$(curl -s "http://127.0.0.1:$admin/metrics" |
    awk '/^edge_proxy_config_reloads_total\{result="success"\}/ { print $2 }')
kill -TERM "$proxy_a" 2>/dev/null || true
for _ in $(seq 150); do kill -0 "$proxy_a" 2>/dev/null || break; sleep 0.1; done
proxy_a_status=0
if kill -0 "$proxy_a" 2>/dev/null; then
    proxy_a_status=timeout
else
    wait "$proxy_a" || proxy_a_status=$?
fi

cat "$work/wrk.txt"
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
socket_errors=$(awk '/Socket errors/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i; print n }' "$work/wrk.txt")
non_2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt")
socket_errors=${socket_errors:-0}
non_2xx=${non_2xx:-0}

echo "zero-downtime: requests=$requests socket_errors=$socket_errors non_2xx=$non_2xx" \
    "proxy_a_exit=$proxy_a_status proxy_a_reload_failures=${failures_seen:-0}" \
    "proxy_b_reloads=${b_reloads:-0}"

ok=1
[ "${requests:-0}" -gt 0 ] || { echo "FAIL: no requests completed"; ok=0; }
[ "$socket_errors" = 0 ] || { echo "FAIL: socket errors"; ok=0; }
[ "$non_2xx" = 0 ] || { echo "FAIL: non-2xx responses"; ok=0; }
[ "$proxy_a_status" = 0 ] || { echo "FAIL: proxy A exited with $proxy_a_status"; ok=0; }
[ "${failures_seen:-0}" = 1 ] || { echo "FAIL: the invalid config was not counted once (${failures_seen:-0})"; ok=0; }
[ "${b_reloads:-0}" -ge 1 ] || { echo "FAIL: proxy B applied no reload"; ok=0; }
if [ "$ok" = 1 ]; then
    echo "zero-downtime: ok"
else
    echo "--- proxy A log"; tail -20 "$work/proxy-a.log"
    echo "--- proxy B log"; tail -20 "$work/proxy-b.log"
    exit 1
fi
