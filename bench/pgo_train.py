#!/usr/bin/env python3
"""Training load for edge-proxy's profile-guided build (scripts/pgo-profile.sh
runs it; README, "Profile-guided build"). An edge-proxy built with
`-Cprofile-generate=DIR` serves bench/run.py's plain and affinity + JSON log
configurations, each through:

  - HTTP/1.1 under wrk, 64, 1, then 64 keep-alive connections, 4 s each;
  - HTTPS under wrk, 64 keep-alive connections, then a new TLS connection per
    request (handshakes), 3 s each;
  - HTTP/2 over TLS: one curl connection carrying 200 requests;
  - its admin port: /metrics, /healthz and /readyz scraped;

then bench/callgrind.py's other routes (per-client limits, a client over its
rate answered 429, and from the stand-in API server: a plain Ingress, a
`use-regex` + `rewrite-target` one, a 50% canary, `limit-rps`, a plain
HTTPRoute and a header match with a weight split), 16 connections for 2 s
each with the JSON access log. Each proxy stops cleanly, which writes its
profile into DIR. Code this load never
runs is what the profile marks cold: a path users depend on belongs here.

    python3 bench/pgo_train.py INSTRUMENTED_EDGE_PROXY

Needs what bench/run.sh installs (wrk, curl, hello-app built) and the stand-in
API server (`cargo build --example fake_api`). Loopback only; every phase is
bounded in time.
"""

import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the same configurations and helpers)
import callgrind  # noqa: E402  (its routes)

ADMIN_PORT = 18320
H2_REQUESTS = 200


def report(what, r):
    print(f"  {what}: {r['rps']:.0f} requests/s, errors: {'; '.join(r['errors']) or 'none'}")


def curl(*args):
    """curl, bounded; fails the training on any error (a profile of error paths
    is not the profile wanted)."""
    subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", *args],
                   check=True, timeout=60)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench.make_certificate()
    bench.start_apps()
    for k, (log, affinity) in enumerate([(False, False), (True, True)]):
        admin = ADMIN_PORT + k
        proc, port = bench.start_edge_build(binary, k, log, affinity,
                                            extra=f'admin: "127.0.0.1:{admin}"\n')
        tls = port + 10
        headers = [bench.cookie_from(port)] if affinity else []
        print(f"{'affinity + log' if affinity else 'plain'}:")
        for conns in (64, 1, 64):
            report(f"HTTP/1.1, {conns} connections", bench.wrk(port, conns, 4, headers=headers))
        report("HTTPS, 64 connections", bench.wrk(tls, 64, 3, headers=headers, scheme="https"))
        report("HTTPS, a handshake per request",
               bench.wrk(tls, 16, 3, headers=headers + ["Connection: close"], scheme="https"))
        cookie = ["-H", headers[0]] if headers else []
        url = f"https://bench.test:{tls}/"
        curl("--http2", "-k", "--resolve", f"bench.test:{tls}:127.0.0.1", *cookie,
             *[u for _ in range(H2_REQUESTS) for u in ("-o", "/dev/null", url)])
        print(f"  HTTP/2: {H2_REQUESTS} requests on one connection")
        for _ in range(20):
            for path in ("/metrics", "/healthz", "/readyz"):
                curl("-o", "/dev/null", f"http://127.0.0.1:{admin}{path}")
        proc.send_signal(signal.SIGTERM)  # a clean exit writes the profile
        proc.wait(timeout=60)
    for route in ("limited", "flooded") + callgrind.API_ROUTES:
        train_route(binary, route)


def train_route(binary, route):
    """One of bench/callgrind.py's routes under wrk."""
    work = os.path.join(bench.work, route)
    os.makedirs(work)
    port = callgrind.free_port()
    config, env, api = callgrind.route_setup(route, "json", work, bench.APPS[0], port)
    try:
        proc = bench.spawn([binary, "--config", config], bench.PROXY_CPU, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.wait_port(port)
        if api:
            callgrind.wait_routed(route, port)
        headers = ["Host: app.test"] + (["X-Version: two"] if route == "httproute-split" else [])
        report(route, bench.wrk(port, 16, 2, headers=headers))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if api:
            api.kill()
            api.wait()


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.cleanup()
