#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: the A/B figure for a
small change on a noisy machine (the count repeats exactly from run to run).

    python3 bench/callgrind.py [EDGE_PROXY_BINARY] [--log json|off] [--clients N]
                               [--cache-sim] [--peer nginx|haproxy] [--keep FILE] [--top N]
                               [--route affinity|plain|limited|flooded|ingress|regex|canary|ingress-limited|httproute|httproute-split]

Runs the binary (default target/release/edge-proxy) under valgrind twice, in
front of one hello-app, on an affinity route (or a plain one, `--route plain`;
or, from an Ingress served by the stand-in API server (`cargo run --example
fake_api`): a plain Ingress route `ingress`, a `use-regex` route with a
`rewrite-target` `regex`, a 50% `canary`; Gateway API: a plain HTTPRoute
`httproute`, one with a header match and a 50/50 weight split `httproute-split`; `limited` is the plain route with
node-wide per-client limits on, `ingress-limited` the Ingress with
`limit-rps` and `limit-connections`, both too high to answer 429; `flooded` a
client over its rate, every request answered 429 by the proxy), with one keep-alive client that sends its cookie back as a browser does: once
for 200 requests and once for
1 200. (I(1 200) - I(200)) / 1 000 is the cost of one request without start-up
and shutdown. `--clients 64`: as many keep-alive clients at once, sharing the
requests (the proxy, ~50 times slower under valgrind, then serves them as under
load). `--cache-sim`: also first-level and last-level cache misses per request
(callgrind's simulated caches). `--peer nginx|haproxy`: the same count for nginx
or HAProxy on the plain route without a log, the yardstick. `--top N`: the N
functions with the most instructions per request (self cost, inlined code
counted in the function it was inlined into; a profiling build names them). Loopback only; both runs are bounded. Needs valgrind.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the nginx and HAProxy configurations)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


INGRESS_ROUTES = ("ingress", "regex", "canary", "ingress-limited")
GATEWAY_ROUTES = ("httproute", "httproute-split")
API_ROUTES = INGRESS_ROUTES + GATEWAY_ROUTES


def ingress_objects(route, app_port):
    """The stand-in API server's objects for an Ingress-served route."""
    def ingress(name, path, annotations, service="hello-app", path_type="Prefix"):
        return {"resource": "ingresses", "object": {
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {f"nginx.ingress.kubernetes.io/{k}": v for k, v in annotations.items()}},
            "spec": {"ingressClassName": "edge-proxy", "rules": [{"host": "app.test", "http": {"paths": [
                {"path": path, "pathType": path_type,
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}}}
    def slice_of(service):
        return {"resource": "endpointslices", "object": {
            "metadata": {"name": f"{service}-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": app_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}}
    objects = [{"resource": "ingressclasses", "object": {
        "metadata": {"name": "edge-proxy"}, "spec": {"controller": "edge-proxy.io/ingress-controller"}}},
        slice_of("hello-app"), slice_of("canary")]
    if route == "ingress":
        objects.append(ingress("app", "/", {}))
    elif route == "ingress-limited":
        objects.append(ingress("app", "/", {"limit-rps": "1000000", "limit-connections": "1000"}))
    elif route == "regex":
        objects.append(ingress("app", "/(.*)", {"use-regex": "true", "rewrite-target": "/$1"},
                               path_type="ImplementationSpecific"))
    else:
        objects.append(ingress("app", "/", {}))
        objects.append(ingress("app-canary", "/", {"canary": "true", "canary-weight": "50"}, service="canary"))
    return objects


def gateway_objects(route, app_port, proxy_port):
    """The stand-in API server's objects for an HTTPRoute: `httproute` one
    plain rule, `httproute-split` a header match (sent on every request) with
    a 50/50 weight split over two Services of the same pod."""
    objects = [o for o in ingress_objects("ingress", app_port) if o["resource"] == "endpointslices"]
    for service in ("hello-app", "canary"):
        objects.append({"resource": "services", "object": {
            "metadata": {"name": service, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}})
    objects.append({"resource": "gatewayclasses", "object": {
        "metadata": {"name": "edge-proxy"}, "spec": {"controllerName": "edge-proxy.io/gateway-controller"}}})
    objects.append({"resource": "gateways", "object": {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"gatewayClassName": "edge-proxy",
                 "listeners": [{"name": "http", "port": proxy_port, "protocol": "HTTP"}]}}})
    rule = {"backendRefs": [{"name": "hello-app", "port": 80}]}
    if route == "httproute-split":
        rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                             "headers": [{"name": "x-version", "value": "two"}]}],
                "backendRefs": [{"name": "hello-app", "port": 80, "weight": 50},
                                {"name": "canary", "port": 80, "weight": 50}]}
    objects.append({"resource": "httproutes", "object": {
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["app.test"], "rules": [rule]}}})
    return objects


def peer_command(peer, work, proxy_port, app_port):
    """nginx or HAProxy (Debian's, as bench/run.sh installs them) configured as
    bench/run.py's plain scenario (its TLS listener included), in front of the one
    hello-app, one process."""
    if not os.path.exists(f"{bench.work}/tls.pem"):
        bench.make_certificate()
    conf = os.path.join(work, f"{peer}.conf")
    if peer == "nginx":
        with open(conf, "w") as f:
            f.write(bench.nginx_config(False, False, apps=[app_port], port=proxy_port))
        # One process: callgrind writes one file, so no master forking a worker.
        return ["nginx", "-c", conf, "-p", work, "-e", f"{work}/nginx-error.log",
                "-g", "master_process off;"]
    with open(conf, "w") as f:
        f.write(bench.haproxy_config(False, False, apps=[app_port], port=proxy_port))
    return ["haproxy", "-f", conf, "-db"]


def route_setup(route, log, work, app_port, proxy_port):
    """edge-proxy's configuration for `route` in `work` (and for an Ingress or
    HTTPRoute, the stand-in API server serving it, whose kubeconfig is in the
    returned environment): (config path, environment, API server or None).
    bench/pgo_train.py trains on the same routes."""
    config = os.path.join(work, "proxy.yaml")
    env = dict(os.environ)
    api = None
    if route in API_ROUTES:
        objects = os.path.join(work, "objects.json")
        with open(objects, "w") as f:
            if route in GATEWAY_ROUTES:
                json.dump(gateway_objects(route, app_port, proxy_port), f)
            else:
                json.dump(ingress_objects(route, app_port), f)
        api = subprocess.Popen([os.path.join(ROOT, "target/debug/examples/fake_api"), work, objects],
                               stdout=subprocess.PIPE)
        assert api.stdout.readline().strip() == b"ready"
        env["KUBECONFIG"] = os.path.join(work, "kubeconfig")
        with open(config, "w") as f:
            f.write(f"""listen:
  http: "127.0.0.1:{proxy_port}"
discovery: kubernetes
{"gateway" if route in GATEWAY_ROUTES else "ingress"}:
  publish_status: false
logging:
  access: {log}
""")
    else:
        affinity = "    affinity:\n      cookie: route" if route == "affinity" else ""
        if route == "limited":
            affinity = ("limits:\n  per_client:\n    requests_per_second: 1000000\n"
                        "    connections: 1000\n")
        if route == "flooded":  # every request after the first is answered 429
            affinity = ("limits:\n  per_client:\n    requests_per_second: 1\n"
                        "    burst: 0\n")
        with open(config, "w") as f:
            f.write(f"""listen:
  http: "127.0.0.1:{proxy_port}"
discovery: static
logging:
  access: {log}
routes:
  - host: app.test
    service: hello-app
    port: 8080
{affinity}
static:
  hello-app: ["127.0.0.1:{app_port}"]
""")
    return config, env, api


def wait_routed(route, proxy_port):
    """Until the proxy answers 200 on `route` (an Ingress or HTTPRoute is 404
    until the proxy has read it), at most 60 s."""
    deadline = time.time() + 60
    while time.time() < deadline:
        probe = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        probe.request("GET", "/", headers={"Host": "app.test", "X-Version": "two",
                                           "Connection": "close"})
        status = probe.getresponse().status
        probe.close()
        if status == 200:
            return
        time.sleep(0.5)
    sys.exit(f"{route}: no 200 from 127.0.0.1:{proxy_port} after 60 s")


def instructions(binary, hello_app, requests, log, route, keep=None, clients=1, cache_sim=False,
                 peer=None):
    """Event totals of one run: [Ir], or with cache_sim
    [Ir, Dr, Dw, I1mr, D1mr, D1mw, ILmr, DLmr, DLmw] (callgrind's order)."""
    work = tempfile.mkdtemp()
    app_port, proxy_port = free_port(), free_port()
    app = subprocess.Popen([hello_app, "--listen", f"127.0.0.1:{app_port}"],
                           stderr=subprocess.DEVNULL)
    config, env, api = route_setup(route, log, work, app_port, proxy_port)
    out = os.path.join(work, "callgrind.out")
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        + (["--cache-sim=yes"] if cache_sim else [])
        + (peer_command(peer, work, proxy_port, app_port) if peer
           else [binary, "--config", config]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(app_port)
        wait_port(proxy_port)
        if api:
            wait_routed(route, proxy_port)
        def client(count):
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=120)
            cookie = None
            for _ in range(count):
                headers = {"Host": "app.test"}
                if route == "httproute-split":
                    headers["X-Version"] = "two"
                if cookie:
                    headers["Cookie"] = cookie
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status in ((200, 429) if route == "flooded" else (200,)), response.status
                set_cookie = response.getheader("set-cookie")
                if set_cookie:
                    cookie = set_cookie.split(";")[0]
            conn.close()

        # Concurrent clients (--clients): the proxy is ~50 times slower under
        # valgrind, so they keep it busy and it serves them as under load.
        threads = [threading.Thread(target=client, args=(requests // clients,))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
        app.terminate()
        if api:
            api.kill()
    if keep:
        shutil.copy(out, keep)
    with open(out) as f:
        events = []
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            if line.startswith(("summary:", "totals:")):
                totals = dict(zip(events, (int(n) for n in line.split()[1:])))
                order = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"]
                return [totals.get(e, 0) for e in order]
    sys.exit(f"no totals in {out}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary", nargs="?", default=os.path.join(ROOT, "target/release/edge-proxy"))
    p.add_argument("--log", default="json", choices=["json", "text", "off"])
    p.add_argument("--route", default="affinity",
                   choices=["affinity", "plain", "limited", "flooded", "ingress", "regex",
                            "canary", "ingress-limited", "httproute", "httproute-split"])
    p.add_argument("--clients", type=int, default=1,
                   help="keep-alive clients sending at once (64: the request path under load)")
    p.add_argument("--cache-sim", action="store_true",
                   help="also simulate the caches: first-level data and last-level misses per request")
    p.add_argument("--peer", choices=["nginx", "haproxy"],
                   help="measure nginx or HAProxy instead, on the plain route without a log")
    p.add_argument("--keep", metavar="FILE",
                   help="copy the 1 200-request run's callgrind.out here (for callgrind_annotate)")
    p.add_argument("--top", type=int, metavar="N",
                   help="also list the N functions that cost the most per request (self cost, "
                        "the difference of the two runs: start-up and shutdown cancel out)")
    args = p.parse_args()
    hello_app = os.path.join(os.path.dirname(args.binary), "hello-app")
    if not os.path.exists(hello_app):
        hello_app = os.path.join(ROOT, "target/release/hello-app")
    if args.route in API_ROUTES:
        subprocess.run(["cargo", "build", "--quiet", "--example", "fake_api"], cwd=ROOT, check=True)
    # Whole requests per client in both runs (1 000 apart, 960 with 64 clients).
    small_n, large_n = 200 // args.clients * args.clients, 1200 // args.clients * args.clients
    if args.peer:
        args.route, args.log, args.binary = "plain", "off", args.peer
    outs = tempfile.mkdtemp()
    keep_small = os.path.join(outs, "small.out") if args.top else None
    keep_large = args.keep or (os.path.join(outs, "large.out") if args.top else None)
    small = instructions(args.binary, hello_app, small_n, args.log, args.route, keep_small,
                         clients=args.clients, cache_sim=args.cache_sim, peer=args.peer)
    large = instructions(args.binary, hello_app, large_n, args.log, args.route, keep_large,
                         clients=args.clients, cache_sim=args.cache_sim, peer=args.peer)
    per = [(b - a) / (large_n - small_n) for a, b in zip(small, large)]
    print(f"{args.binary}: {per[0]:,.0f} instructions per request "
          f"({args.route} route, access log {args.log}, {args.clients} client(s); "
          f"{small[0]:,} for {small_n}, {large[0]:,} for {large_n})")
    if args.cache_sim:
        # callgrind's simulated caches (first-level and last-level of this CPU's sizes).
        print(f"  per request: data reads {per[1]:,.0f}, writes {per[2]:,.0f}; "
              f"first-level data misses {per[4] + per[5]:,.0f}, instruction misses {per[3]:,.0f}; "
              f"last-level misses {per[6] + per[7] + per[8]:,.0f}")
    if args.top:
        print_top(keep_small, keep_large, large_n - small_n, args.top)
    shutil.rmtree(outs, ignore_errors=True)


def self_costs(out):
    """Instructions by function (self cost, inlined code under the function
    it was inlined into), from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", out],
                          capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in text.splitlines():
        # "  1,234 ( 0.56%)  file.rs:function [object]"; the file part is dropped
        # so that a function's inlined lines from other files add up.
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+[^=\s][^:]*:(.+?)(?: \[.*\])?$", line)
        if m:
            name = m.group(2)
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def print_top(small_out, large_out, requests, n):
    small, large = self_costs(small_out), self_costs(large_out)
    per = sorted(((large[f] - small.get(f, 0)) / requests, f) for f in large)
    print(f"  the {n} functions costing most per request (self instructions):")
    for cost, name in reversed(per[-n:]):
        print(f"  {cost:8,.0f}  {name[:150]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)  # made by importing run.py
