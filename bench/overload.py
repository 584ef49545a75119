#!/usr/bin/env python3
"""Sustained overload: wrk with many connections against edge-proxy builds and
HAProxy, one after another, each proxy one worker on CPU 1 (wrk and three
hello-apps on CPU 0, as bench/run.py's pinned scenarios).

    python3 bench/overload.py CONNECTIONS SECONDS BINARY [BINARY...]

Prints requests/s, p50, p99 and wrk's errors for each (a timeout is a request
unanswered after wrk's 2 s). Run bench/run.sh once first (it installs HAProxy
and wrk and builds hello-app), and raise the file limit (`ulimit -n`) above
twice the connections. Loopback only. Not a test: nothing here asserts a timing.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the same configurations and helpers)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    conns, seconds, binaries = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench.make_certificate()
    for port in bench.APPS:
        bench.spawn([f"{bench.BIN}/hello-app", "--listen", f"127.0.0.1:{port}"], bench.CLIENT_CPU,
                    stderr=subprocess.DEVNULL)
        bench.wait_port(port)
    targets = []
    for k, binary in enumerate(binaries):
        port, tls = 18300 + k, 18310 + k
        config = (bench.edge_config(False, False)
                  .replace(f"127.0.0.1:{bench.PORTS['edge-proxy']}", f"127.0.0.1:{port}")
                  .replace(f"127.0.0.1:{bench.TLS_PORTS['edge-proxy']}", f"127.0.0.1:{tls}"))
        path = f"{bench.work}/{k}.yaml"
        with open(path, "w") as f:
            f.write(config)
        bench.spawn([binary, "--config", path], bench.PROXY_CPU,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.wait_port(port)
        targets.append((binary, port))
    with open(f"{bench.work}/haproxy.cfg", "w") as f:
        f.write(bench.haproxy_config(False, False))
    bench.spawn(["haproxy", "-f", f"{bench.work}/haproxy.cfg", "-db"], bench.PROXY_CPU,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_port(bench.PORTS["HAProxy"])
    targets.append(("HAProxy", bench.PORTS["HAProxy"]))
    for name, port in targets:
        r = bench.wrk(port, conns, seconds)
        print(f"{name}: {r['rps']:.0f} requests/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"errors: {'; '.join(r['errors']) or 'none'}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in bench.children:
            bench.stop(p)
        import shutil
        shutil.rmtree(bench.work, ignore_errors=True)
