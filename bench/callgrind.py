#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: the A/B figure for a
small change on a noisy machine (the count repeats exactly from run to run).

    python3 bench/callgrind.py [EDGE_PROXY_BINARY] [--log json|off] [--route affinity|plain]

Runs the binary (default target/release/edge-proxy) under valgrind twice, in
front of one hello-app, on an affinity route (or a plain one, `--route plain`),
with one keep-alive client that sends its cookie back as a browser does: once
for 200 requests and once for
1 200. (I(1 200) - I(200)) / 1 000 is the cost of one request without start-up
and shutdown. Loopback only; both runs are bounded. Needs valgrind.
"""

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time

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


def instructions(binary, hello_app, requests, log, route):
    work = tempfile.mkdtemp()
    app_port, proxy_port = free_port(), free_port()
    app = subprocess.Popen([hello_app, "--listen", f"127.0.0.1:{app_port}"],
                           stderr=subprocess.DEVNULL)
    config = os.path.join(work, "proxy.yaml")
    affinity = "    affinity:\n      cookie: route" if route == "affinity" else ""
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
    out = os.path.join(work, "callgrind.out")
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "--config", config],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(app_port)
        wait_port(proxy_port)
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        cookie = None
        for _ in range(requests):
            headers = {"Host": "app.test"}
            if cookie:
                headers["Cookie"] = cookie
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            set_cookie = response.getheader("set-cookie")
            if set_cookie:
                cookie = set_cookie.split(";")[0]
        conn.close()
        time.sleep(1)
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
        app.terminate()
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    sys.exit(f"no totals in {out}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary", nargs="?", default=os.path.join(ROOT, "target/release/edge-proxy"))
    p.add_argument("--log", default="json", choices=["json", "text", "off"])
    p.add_argument("--route", default="affinity", choices=["affinity", "plain"])
    args = p.parse_args()
    hello_app = os.path.join(os.path.dirname(args.binary), "hello-app")
    if not os.path.exists(hello_app):
        hello_app = os.path.join(ROOT, "target/release/hello-app")
    small = instructions(args.binary, hello_app, 200, args.log, args.route)
    large = instructions(args.binary, hello_app, 1200, args.log, args.route)
    print(f"{args.binary}: {(large - small) / 1000:,.0f} instructions per request "
          f"({args.route} route, access log {args.log}; {small:,} for 200, {large:,} for 1 200)")


if __name__ == "__main__":
    main()
