#!/usr/bin/env python3
"""Per-client limits under a flood, and their memory with a million clients.

Run through bench/flood.sh (it installs the packages and builds the binaries).

1. Flood: one client sends as fast as 32 connections go (wrk), far over its
   rate of 50 requests a second (burst 100); beside it, 64 well-behaved clients
   send 10 requests a second each. Clients are told apart by X-Forwarded-For
   from a trusted 127.0.0.1, as behind a load balancer. Measured: the
   well-behaved clients' p50/p99 and their errors (anything but a 200), and
   the proxy's CPU, for edge-proxy without and with `limits.per_client`, and
   for nginx (`limit_req`, realip) and HAProxy (a stick table) with their own
   equivalent limit.
2. Memory: edge-proxy with the limit on, hit by a new client address on every
   request (wrk with a Lua script) until a million distinct addresses have
   come; its resident memory before, after a first 2 s run and at the end.

Every proxy gets one worker pinned to CPU 1; wrk, the Python clients and
hello-app run on CPU 0. Loopback only; every phase is bounded in time.
Writes bench/flood.md and bench/flood.json. Not a test: nothing asserts.
"""

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import (BIN, CLIENT_CPU, EDGE, PROXY_CPU, cpu_seconds, memory_mib,  # noqa: E402
                 spawn, stop, wait_port, work)

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "64"))
CLIENT_RPS = 10
RATE, BURST = 50, 100
DISTINCT = int(os.environ.get("BENCH_DISTINCT_CLIENTS", "1000000"))
# A subset of the proxies below, separated by ";" (a quick A/B of one).
ONLY = [n.strip() for n in os.environ.get("BENCH_PROXIES", "").split(";") if n.strip()]
OUT = os.environ.get("BENCH_OUT", "bench/flood")
APP = 18281
PORTS = {"edge-proxy, no limit": 18290, "edge-proxy, limit": 18291, "nginx, limit_req": 18292,
         "HAProxy, stick table": 18293}


def edge_config(port, limit):
    limits = (f"limits:\n  per_client: {{ requests_per_second: {RATE}, burst: {BURST} }}\n"
              if limit else "")
    return f"""listen: {{ http: "127.0.0.1:{port}" }}
discovery: static
threads: 1
trusted_proxies: ["127.0.0.1/32"]
logging: {{ format: text, access: off }}
{limits}routes:
  - service: hello-app
    port: 8080
static:
  hello-app: ["127.0.0.1:{APP}"]
"""


def nginx_config(port):
    return f"""worker_processes 1;
daemon off;
pid {work}/flood-nginx.pid;
error_log {work}/flood-nginx-error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    limit_req_zone $binary_remote_addr zone=clients:10m rate={RATE}r/s;
    limit_req_status 429;
    limit_req_log_level warn;
    upstream hello {{ server 127.0.0.1:{APP}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            limit_req zone=clients burst={BURST} nodelay;
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_config(port):
    return f"""global
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
    bind 127.0.0.1:{port}
    http-request set-src hdr_ip(x-forwarded-for,-1) if {{ src 127.0.0.1 }}
    stick-table type ip size 1m expire 30s store http_req_rate(1s)
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {RATE + BURST} }}
    default_backend hello
backend hello
    server s0 127.0.0.1:{APP}
"""


def start(name):
    port = PORTS[name]
    if name.startswith("edge-proxy"):
        path = f"{work}/flood-{port}.yaml"
        with open(path, "w") as f:
            f.write(edge_config(port, name.endswith(", limit")))
        p = spawn([EDGE, "--config", path], PROXY_CPU, stdout=subprocess.DEVNULL,
                  stderr=open(f"{work}/flood-{port}.log", "w"), env={**os.environ, "EDGE_PROXY_LOG": "warn"})
    elif name.startswith("nginx"):
        with open(f"{work}/flood-nginx.conf", "w") as f:
            f.write(nginx_config(port))
        p = spawn(["nginx", "-c", f"{work}/flood-nginx.conf", "-p", work,
                   "-e", f"{work}/flood-nginx-error.log"], PROXY_CPU)
    else:
        with open(f"{work}/flood-haproxy.cfg", "w") as f:
            f.write(haproxy_config(port))
        p = spawn(["haproxy", "-f", f"{work}/flood-haproxy.cfg", "-db"], PROXY_CPU,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


async def client(port, address, seconds, latencies, errors):
    """One well-behaved client: a keep-alive connection, CLIENT_RPS a second."""
    request = (f"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: {address}\r\n\r\n").encode()
    end = time.monotonic() + seconds
    reader = writer = None
    next_at = time.monotonic()
    while time.monotonic() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await asyncio.wait_for(reader.readexactly(length), 5)
            latencies.append((time.monotonic() - started) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, AttributeError) as e:
            errors.append(type(e).__name__)
            writer = None
        next_at += 1 / CLIENT_RPS
        await asyncio.sleep(max(0, next_at - time.monotonic()))
    if writer:
        writer.close()


async def well_behaved(port, seconds):
    latencies, errors = [], []
    await asyncio.gather(*(client(port, f"10.1.{i // 250}.{i % 250 + 1}", seconds, latencies, errors)
                           for i in range(CLIENTS)))
    return latencies, errors


def flood(name, flooding=True):
    p = start(name)
    port = PORTS[name]
    # Without the flood: what the well-behaved clients see on a quiet proxy.
    wrk = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c32", f"-d{SECONDS}s",
         "-H", "Host: app.test", "-H", "X-Forwarded-For: 10.9.9.9", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, text=True) if flooding else None
    cpu_before = cpu_seconds(p.pid)
    latencies, errors = asyncio.run(well_behaved(port, SECONDS - 1))
    out = wrk.communicate(timeout=SECONDS + 30)[0] if wrk else "0 requests in"
    cpu = cpu_seconds(p.pid) - cpu_before
    stop(p)
    flood_requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(non_2xx.group(1)) if non_2xx else 0
    latencies.sort()
    result = {
        "proxy": name if flooding else f"{name}, no flood",
        "well_behaved_requests": len(latencies),
        "well_behaved_errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
        "flood_requests": flood_requests,
        "flood_served": flood_requests - refused,
        "proxy_cpu_s": round(cpu, 2),
    }
    print(f"  {result['proxy']}: well-behaved p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"{len(errors)} errors; flood {flood_requests} sent, {result['flood_served']} served; "
          f"proxy CPU {cpu:.1f} s", flush=True)
    return result


DISTINCT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local a = math.floor(counter / 65536) % 256
  local b = math.floor(counter / 256) % 256
  local c = counter % 256
  return wrk.format(nil, "/", {["Host"] = "app.test",
                               ["X-Forwarded-For"] = "10." .. a .. "." .. b .. "." .. c})
end
"""


def memory():
    name = "edge-proxy, limit"
    p = start(name)
    port = PORTS[name]
    script = f"{work}/distinct.lua"
    with open(script, "w") as f:
        f.write(DISTINCT_LUA)
    points = [("started, no request yet", 0, memory_mib(p.pid, "VmRSS"))]

    def distinct(seconds):
        """Requests (each from a new address) that one wrk run of `seconds` sent."""
        out = subprocess.run(
            ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c8", f"-d{seconds}s", "-s", script,
             f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 60).stdout
        return int(re.search(r"(\d+) requests in", out).group(1))

    # Each wrk run starts its addresses over: the largest run is the count.
    first = distinct(2)
    points.append((f"{first:,} distinct addresses", first, memory_mib(p.pid, "VmRSS")))
    print(f"  {points[-1][0]}: {points[-1][2]:.1f} MiB", flush=True)
    sent, seconds = first, min(300, int(DISTINCT / max(first / 2, 1) * 1.2) + 1)
    while sent < DISTINCT and seconds <= 600:
        sent = max(sent, distinct(seconds))
        seconds *= 2
    points.append((f"{sent:,} distinct addresses", sent, memory_mib(p.pid, "VmRSS")))
    print(f"  {points[-1][0]}: {points[-1][2]:.1f} MiB", flush=True)
    stop(p)
    return [{"after": what, "distinct": n, "rss_mib": round(rss, 1)} for what, n, rss in points]


def markdown(res):
    lines = [
        "# Per-client limits: a flood beside well-behaved clients",
        "",
        f"`bash bench/flood.sh`, {res['date']}, {res['machine']}. One flooding client (wrk, 32",
        f"connections) and {CLIENTS} well-behaved clients ({CLIENT_RPS} requests/s each) for "
        f"{SECONDS} s, told apart by",
        f"X-Forwarded-For from a trusted 127.0.0.1; limit {RATE} requests/s, burst {BURST}. "
        "The proxy on one core.",
        "",
        "| proxy | well-behaved p50 ms | p99 ms | their errors | flood sent | flood served | proxy CPU s | CPU µs per request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["flood"]:
        answered = r["flood_requests"] + r["well_behaved_requests"]
        lines.append(f"| {r['proxy']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['well_behaved_errors']} | "
                     f"{r['flood_requests']} | {r['flood_served']} | {r['proxy_cpu_s']} | "
                     f"{r['proxy_cpu_s'] * 1e6 / answered:.1f} |")
    lines += [
        "",
        "Reading it: the well-behaved clients' latency comes from a Python client that shares",
        "CPU 0 with wrk and hello-app, so a few milliseconds of p99 are run-to-run noise (compare",
        "the no-flood row); what to read is their errors (none may be refused) and what of the",
        "flood reaches the pods (flood served: the burst and the rate, nothing more). The",
        "proxy's core is busy either way: answered sooner, the flooder sends more, and the",
        "last column is what each answer costs the proxy.",
    ]
    lines += ["", "Memory of edge-proxy with the limit on, one new client address per request:", "",
              "| after | resident MiB |", "|---|---|"]
    for m in res["memory"]:
        lines.append(f"| {m['after']} | {m['rss_mib']} |")
    return "\n".join(lines) + "\n"


def main():
    app = spawn([f"{BIN}/hello-app", "--listen", f"127.0.0.1:{APP}"], CLIENT_CPU,
                stderr=subprocess.DEVNULL)
    wait_port(APP)
    try:
        print("flood:", flush=True)
        results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs",
                   "flood": [flood("edge-proxy, limit", flooding=False)]
                   + [flood(name) for name in PORTS if not ONLY or name in ONLY]}
        print("memory:", flush=True)
        results["memory"] = memory()
    finally:
        stop(app)
    with open(f"{OUT}.json", "w") as f:
        json.dump(results, f, indent=2)
    with open(f"{OUT}.md", "w") as f:
        f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
