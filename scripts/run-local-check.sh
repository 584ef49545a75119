#!/usr/bin/env bash
# The README's main command as a newcomer runs it: `bash scripts/run-local.sh`
# (release builds, edge-proxy with its profile-guided optimisation, three
# hello-apps and the proxy on examples/local.yaml), checked against the README's
# curl session: 200 with the affinity cookie, the same app for that cookie
# every time, /plain round robin; then Ctrl-C stops everything.
#   bash scripts/run-local-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
fail() { echo "FAIL: $*" >&2; tail -30 "$log" >&2; exit 1; }
# Its own process group, so that the Ctrl-C below reaches only it.
setsid bash scripts/run-local.sh >"$log" 2>&1 &
group=$!
stop() { kill -INT -- "-$group" 2>/dev/null || true; }
trap 'stop; rm -f "$log"' EXIT

# The build comes first: up to 40 minutes on a fresh machine.
for _ in $(seq 2400); do
    curl -fsS -o /dev/null http://127.0.0.1:9901/readyz 2>/dev/null && break
    kill -0 "$group" 2>/dev/null || fail "run-local.sh exited before the proxy was ready"
    sleep 1
done
curl -fsS -o /dev/null http://127.0.0.1:9901/readyz || fail "not ready after 40 minutes"

first=$(curl -si --max-time 5 http://127.0.0.1:8080/) || fail "curl http://127.0.0.1:8080/"
grep -q '^HTTP/1.1 200' <<<"$first" || fail "GET / answered: $(head -1 <<<"$first")"
cookie=$(sed -n 's/^Set-Cookie: \(route=[0-9a-f]*\);.*Max-Age=172800.*/\1/p' <<<"$first" | tr -d '\r')
[ -n "$cookie" ] || fail "no 48 h route cookie in: $first"
app=$(grep -o 'hello-app-[123]' <<<"$first") || fail "no hello-app name in: $first"
for _ in 1 2 3 4 5; do
    again=$(curl -fsS --max-time 5 -b "$cookie" http://127.0.0.1:8080/) || fail "curl with $cookie"
    [[ "$again" == *"Hello world from $app!"* ]] || fail "$cookie went from $app to: $again"
done
plain=$(for _ in 1 2 3; do curl -fsS --max-time 5 http://127.0.0.1:8080/plain; done | grep -o 'hello-app-[123]' | sort -u | wc -l)
[ "$plain" = 3 ] || fail "/plain reached $plain of 3 apps in 3 requests (round robin)"
echo "ok: run-local.sh serves the README's session ($app kept by $cookie, /plain round robin)"

stop
for _ in $(seq 100); do
    kill -0 "$group" 2>/dev/null || break
    sleep 0.1
done
! kill -0 "$group" 2>/dev/null || fail "run-local.sh still running 10 s after Ctrl-C"
! curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/ || fail "something still serves :8080 after Ctrl-C"
echo "ok: Ctrl-C stopped the proxy and the apps"
