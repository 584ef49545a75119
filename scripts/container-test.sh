#!/usr/bin/env bash
# The README's container flow with a real engine: build both images, `docker
# run` each, then docker compose with three hello-app replicas (spread, cookie
# stickiness, failover with 0 errors, healthchecks, clean stop, nothing left
# after `down`). The engine is Debian's podman with runc, and compose is Docker
# Compose v2 on podman's Docker API (scripts/container-engine.sh); base images
# no registry can give here are made locally (scripts/container-base-images.sh).
#   bash scripts/container-test.sh        (root)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/container-engine.sh
bash scripts/container-base-images.sh
export DOCKER_HOST=unix:///run/podman/podman.sock
# Compose's BuildKit path wants a buildkit container from a registry; podman's
# API serves the classic build endpoint, which builds the same Dockerfiles.
export COMPOSE_BAKE=false DOCKER_BUILDKIT=0
project=edgeci
compose=(docker-compose -p "$project")
tmp=$(mktemp -d)

cleanup() {
    podman rm -f -t 0 ep-hello ep-proxy ep-nocap >/dev/null 2>&1 || true
    "${compose[@]}" down -t 1 >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
ok() { echo "  ok: $*"; passed=$((passed + 1)); }
fail() { echo "  FAILED: $*" >&2; exit 1; }

# Poll `cmd` every 0.5 s until it succeeds, at most $1 seconds.
within() {
    local seconds=$1; shift
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}
exit_code() { podman inspect -f '{{.State.ExitCode}}' "$1"; }
# Which hello-app replica answered: NAME in "Hello world from NAME! ...".
served_by() { sed -n 's/^Hello world from \([^!]*\)!.*/\1/p'; }

echo "== build context: no build outputs or fuzz artifacts"
mkdir -p fuzz/target fuzz/artifacts
touch fuzz/target/.context-probe fuzz/artifacts/.context-probe
printf 'FROM docker.io/library/rust:1.95-bookworm\nCOPY . /ctx\nRUN ! find /ctx -name .context-probe -o -name target -prune | grep . && du -sh /ctx\n' |
    podman build --pull=never -q -f - -t edgeci-context . >"$tmp/context.log" 2>&1 ||
    { cat "$tmp/context.log"; fail "the build context holds target/ or fuzz artifacts"; }
rm -f fuzz/target/.context-probe fuzz/artifacts/.context-probe
podman rmi -f edgeci-context >/dev/null 2>&1 || true
ok "context clean"

echo "== docker build (both images)"
for image in app proxy; do
    tag=$([ $image = app ] && echo hello-app:dev || echo edge-proxy:dev)
    start=$SECONDS
    podman build --pull=never --format docker -f Dockerfile.$image -t "$tag" . >"$tmp/build-$image.log" 2>&1 ||
        { tail -40 "$tmp/build-$image.log"; fail "Dockerfile.$image does not build"; }
    size=$(podman image inspect -f '{{.Size}}' "$tag")
    user=$(podman image inspect -f '{{.Config.User}}' "$tag")
    echo "  $tag: built in $((SECONDS - start)) s, $((size / 1000000)) MB, user $user"
    [ "$user" = 65532:65532 ] || fail "$tag runs as '$user', not 65532"
    if podman run --rm --entrypoint /bin/sh "$tag" -c true >/dev/null 2>&1; then
        fail "$tag has a shell"
    fi
    ok "$tag builds, runs as 65532, has no shell"
done

# Without systemd, podman cannot schedule HEALTHCHECKs on a timer (it logs
# an error per container, kept in $tmp/podman.log): the test runs each check
# itself with `podman healthcheck run`, which executes the image's command.
echo "== docker run hello-app"
podman run -d --name ep-hello -p 127.0.0.1:18081:8080 -e POD_NAME=hello-1 hello-app:dev >/dev/null 2>>"$tmp/podman.log"
within 20 curl -fsS http://127.0.0.1:18081/ || fail "hello-app does not answer"
curl -fsS http://127.0.0.1:18081/ | grep -q '^Hello world from hello-1! The time is ' || fail "hello-app body"
podman healthcheck run ep-hello >/dev/null || fail "hello-app HEALTHCHECK"
podman stop -t 25 ep-hello >/dev/null 2>>"$tmp/podman.log"
[ "$(exit_code ep-hello)" = 0 ] || fail "hello-app exited $(exit_code ep-hello) on stop"
ok "hello-app serves, is healthy, stops with 0"

echo "== docker run edge-proxy (alone: its default config names hello-app, which does not resolve)"
podman run -d --name ep-proxy -p 127.0.0.1:18080:8080 --read-only --cap-drop ALL \
    --cap-add NET_BIND_SERVICE edge-proxy:dev >/dev/null 2>>"$tmp/podman.log"
within 20 curl -sS -o /dev/null http://127.0.0.1:18080/ || fail "edge-proxy does not answer"
status=$(curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/)
[ "$status" = 503 ] || fail "edge-proxy without hello-app answered $status, not 503"
within 10 sh -c 'podman logs ep-proxy 2>&1 | grep -q "does not resolve"' ||
    { podman logs ep-proxy; fail "no log line says hello-app does not resolve"; }
start=$SECONDS
podman stop -t 15 ep-proxy >/dev/null 2>>"$tmp/podman.log"
took=$((SECONDS - start))
[ "$(exit_code ep-proxy)" = 0 ] || fail "edge-proxy exited $(exit_code ep-proxy) on stop"
((took < 5)) || fail "an idle edge-proxy took $took s to stop"
ok "edge-proxy answers 503, logs the unresolvable name, stops idle in ${took} s with 0"
# The binary's file capability needs NET_BIND_SERVICE in the bounding set.
podman run --name ep-nocap --read-only --cap-drop ALL edge-proxy:dev >/dev/null 2>&1 || true
[ "$(exit_code ep-nocap)" != 0 ] || fail "edge-proxy started with --cap-drop ALL alone"
ok "--cap-drop ALL without --cap-add NET_BIND_SERVICE fails to start, as README says"

echo "== docker compose up --build (three hello-app replicas)"
"${compose[@]}" up --build -d >"$tmp/compose-up.log" 2>&1 || { cat "$tmp/compose-up.log"; fail "compose up"; }
proxy=$("${compose[@]}" ps -q edge-proxy)
within 60 sh -c '[ "$(curl -sS -o /dev/null -w "%{http_code}" http://127.0.0.1:8080/)" = 200 ]' ||
    { podman logs "$proxy"; fail "compose: no 200 from edge-proxy within 60 s"; }
# All three replicas known to DNS discovery before counting the spread.
within 30 sh -c 'curl -fsS http://127.0.0.1:9901/metrics | grep -q "^edge_proxy_endpoints{service=\"default/hello-app:8080\",state=\"ready\"} 3"' ||
    fail "compose: edge-proxy does not see three hello-app replicas"
for _ in $(seq 30); do curl -fsS http://127.0.0.1:8080/ | served_by; done | sort | uniq -c >"$tmp/spread"
cat "$tmp/spread"
[ "$(wc -l <"$tmp/spread")" = 3 ] || fail "30 new sessions did not reach all three replicas"
ok "30 new sessions spread over three replicas"

curl -fsS -c "$tmp/jar" http://127.0.0.1:8080/ | served_by >"$tmp/pinned"
for _ in $(seq 10); do curl -fsS -b "$tmp/jar" http://127.0.0.1:8080/ | served_by; done | sort -u >"$tmp/sticky"
cmp -s "$tmp/pinned" "$tmp/sticky" || fail "the cookie did not stick: $(cat "$tmp/sticky")"
ok "10 of 10 requests with the cookie reached $(cat "$tmp/pinned")"

podman healthcheck run "$proxy" >/dev/null || fail "edge-proxy healthcheck in compose"
for c in $("${compose[@]}" ps -q hello-app); do
    podman healthcheck run "$c" >/dev/null || fail "hello-app healthcheck in compose"
done
[ "$(podman inspect -f '{{.State.Health.Status}}' "$proxy")" = healthy ] || fail "edge-proxy not healthy"
ok "healthchecks pass (no shell in either image)"

# Failover: kill the pinned replica; its address stops answering.
victim=$(podman ps -q --filter "label=com.docker.compose.project=$project" --filter "name=hello-app" |
    while read -r c; do
        if [ "$(podman inspect -f '{{.Config.Hostname}}' "$c")" = "$(cat "$tmp/pinned")" ]; then echo "$c"; fi
    done)
[ -n "$victim" ] || fail "cannot find the pinned replica $(cat "$tmp/pinned")"
podman kill "$victim" >/dev/null
errors=0
start=$SECONDS
for _ in $(seq 50); do
    curl -fsS --max-time 10 -b "$tmp/jar" -c "$tmp/jar" http://127.0.0.1:8080/ | served_by >>"$tmp/after" || errors=$((errors + 1))
done
((errors == 0)) || fail "$errors of 50 requests failed after the pinned replica was killed"
if grep -qx "$(cat "$tmp/pinned")" "$tmp/after"; then fail "a request still reached the killed replica"; fi
[ "$(sort -u "$tmp/after" | wc -l)" = 1 ] || fail "the new cookie did not stick: $(sort "$tmp/after" | uniq -c)"
ok "pinned replica killed: 50 requests, 0 errors, re-pinned to $(sort -u "$tmp/after") in $((SECONDS - start)) s"

start=$SECONDS
"${compose[@]}" stop >/dev/null 2>&1
took=$((SECONDS - start))
[ "$(exit_code "$proxy")" = 0 ] || fail "edge-proxy exited $(exit_code "$proxy") on compose stop"
ok "compose stop in ${took} s, edge-proxy exit 0"

"${compose[@]}" down >/dev/null 2>&1
left=$(podman ps -aq --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "containers left after down: $left"
if podman network exists "${project}_default"; then fail "network left after down"; fi
ok "nothing left after compose down"

echo "containers: $passed passed, 0 failed"
