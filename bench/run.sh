#!/usr/bin/env bash
# Benchmark: edge-proxy side by side with nginx and HAProxy (Debian's packages),
# each in front of the same three hello-app instances, in the same run.
# Reports requests/s, p50/p99 latency and memory, and edge-proxy's ratios.
#
#   bash bench/run.sh              # 10 s per run, results in bench/results.md
#   BENCH_SECONDS=2 bash bench/run.sh
#
# Fairness: each proxy gets one worker (edge-proxy threads: 1, nginx
# worker_processes 1, HAProxy nbthread 1) pinned to CPU 1; wrk and the apps run
# on CPU 0. Upstream keep-alive is on for all three; access logs are off for all
# three. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-50}
out=${BENCH_OUT:-bench/results.md}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash scripts/build-release.sh edge-proxy hello-app >/dev/null 2>&1
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

for i in 1 2 3; do
    POD_NAME="hello-$i" taskset -c 0 "$bin/hello-app" --listen "127.0.0.1:1818$i" 2>/dev/null &
    pids+=($!)
    wait_port "1818$i"
done

cat >"$work/edge.yaml" <<YAML
listen: { http: "127.0.0.1:18190" }
discovery: static
threads: 1
logging: { format: text, access: off }
routes:
  - service: hello-app
    port: 8080
static:
  hello-app: ["127.0.0.1:18181", "127.0.0.1:18182", "127.0.0.1:18183"]
YAML
EDGE_PROXY_LOG=warn taskset -c 1 "$bin/edge-proxy" --config "$work/edge.yaml" 2>"$work/edge.log" &
pids+=($!)
edge_pid=$!

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream hello {
        server 127.0.0.1:18181;
        server 127.0.0.1:18182;
        server 127.0.0.1:18183;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:18191 reuseport;
        location / {
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
pids+=($!)
nginx_pid=$!

cat >"$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend web
    bind 127.0.0.1:18192
    option forwardfor
    default_backend hello
backend hello
    balance roundrobin
    server a 127.0.0.1:18181
    server b 127.0.0.1:18182
    server c 127.0.0.1:18183
CONF
taskset -c 1 haproxy -f "$work/haproxy.cfg" -db &
pids+=($!)
haproxy_pid=$!

for p in 18190 18191 18192; do wait_port "$p"; done

# run NAME PORT PID -> "rps p50_ms p99_ms rss_mib"
run() {
    local name=$1 port=$2 pid=$3
    # Warm up connections and pools, then measure.
    taskset -c 0 wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$port/" >/dev/null
    local cpu_before cpu_after
    cpu_before=$(cpu_ticks "$pid")
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/" >"$work/$name.txt"
    cpu_after=$(cpu_ticks "$pid")
    local rps p50 p99 errors rss requests cpu_us
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/$name.txt")
    requests=$(awk '/requests in/ { print $1 }' "$work/$name.txt")
    # Proxy CPU (user+sys) per request: the fairest figure on a small shared machine.
    cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    p50=$(awk '$1 == "50%" { print $2 }' "$work/$name.txt")
    p99=$(awk '$1 == "99%" { print $2 }' "$work/$name.txt")
    errors=$(awk '/Socket errors|Non-2xx/ { print }' "$work/$name.txt")
    [ -z "$errors" ] || echo "$name: $errors" >&2
    # Memory of the process and its children (nginx master + worker).
    rss=$(ps -o rss= --pid "$pid" --ppid "$pid" | awk '{ s += $1 } END { printf "%.1f", s / 1024 }')
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $rss $cpu_us"
}

# utime + stime (clock ticks) of PID and its children (nginx's worker).
cpu_ticks() {
    local total=0 p
    for p in $1 $(ps -o pid= --ppid "$1"); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$total"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

to_ms() { # wrk prints 512.00us, 1.20ms, 1.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print v }'
}

# Interleave the proxies over several rounds (the machine is noisy); report medians.
rounds=${BENCH_ROUNDS:-3}
for r in $(seq "$rounds"); do
    run edge-proxy 18190 "$edge_pid" >>"$work/edge.rounds"
    run nginx 18191 "$nginx_pid" >>"$work/nginx.rounds"
    run haproxy 18192 "$haproxy_pid" >>"$work/haproxy.rounds"
    run direct 18181 "${pids[0]}" >>"$work/direct.rounds"
done
col() { awk -v c="$2" '{ print $c }' "$work/$1.rounds" | median; }
for who in edge nginx haproxy direct; do
    read -r "${who}_rps" "${who}_p50" "${who}_p99" "${who}_rss" "${who}_cpu" \
        <<<"$(col "$who" 1) $(col "$who" 2) $(col "$who" 3) $(col "$who" 4) $(col "$who" 5)"
done
e_rps=$edge_rps e_p50=$edge_p50 e_p99=$edge_p99 e_rss=$edge_rss e_cpu=$edge_cpu
n_rps=$nginx_rps n_p50=$nginx_p50 n_p99=$nginx_p99 n_rss=$nginx_rss n_cpu=$nginx_cpu
h_rps=$haproxy_rps h_p50=$haproxy_p50 h_p99=$haproxy_p99 h_rss=$haproxy_rss h_cpu=$haproxy_cpu
d_rps=$direct_rps d_p50=$direct_p50 d_p99=$direct_p99

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

{
    echo "# edge-proxy benchmark"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs ($(uname -r)); wrk -t1 -c$conns, ${secs}s per run,"
    echo "medians of $rounds interleaved rounds;"
    echo "one proxy worker pinned to CPU 1, wrk and 3 hello-apps on CPU 0; upstream keep-alive on."
    echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HAProxy $(haproxy -v | awk 'NR==1 { print $3 }'), edge-proxy $("$bin/edge-proxy" --version | awk '{ print $2 }')."
    echo
    echo "| proxy | requests/s | CPU µs/request | p50 ms | p99 ms | RSS MiB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    echo "| edge-proxy | $e_rps | $e_cpu | $e_p50 | $e_p99 | $e_rss |"
    echo "| nginx | $n_rps | $n_cpu | $n_p50 | $n_p99 | $n_rss |"
    echo "| HAProxy | $h_rps | $h_cpu | $h_p50 | $h_p99 | $h_rss |"
    echo "| (hello-app direct, one instance) | $d_rps | | $d_p50 | $d_p99 | |"
    echo
    echo "Ratios (edge-proxy / other; throughput above 1 is better, CPU, latency and memory below 1 are better):"
    echo
    echo "| vs | requests/s | CPU per request | p99 latency | RSS |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    echo "| nginx | $(ratio "$e_rps" "$n_rps") | $(ratio "$e_cpu" "$n_cpu") | $(ratio "$e_p99" "$n_p99") | $(ratio "$e_rss" "$n_rss") |"
    echo "| HAProxy | $(ratio "$e_rps" "$h_rps") | $(ratio "$e_cpu" "$h_cpu") | $(ratio "$e_p99" "$h_p99") | $(ratio "$e_rss" "$h_rss") |"
} | tee "$out"
