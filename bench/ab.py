#!/usr/bin/env python3
"""Two edge-proxy binaries side by side, with HAProxy as the yardstick: the
wall-clock A/B of a change, where bench/callgrind.py gives its instructions.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--connections 64] [--rounds 5] [--log]
                        [--workers N]

Same set-up as bench/run.sh's pinned scenarios (run that once first: it
installs HAProxy and wrk and builds hello-app): each proxy one worker on CPU 1,
wrk and three hello-apps on CPU 0, interleaved 5 s runs, medians. CPU per
request is split into user and system time (from /proc), since a change to the
proxy's own code moves only the first. `--log` turns on the access log and
cookie affinity (HAProxy: `cookie insert` and its log). `--workers N` is
run.py's "2 workers" scenario instead: every proxy N workers, wrk N threads,
nothing pinned. Loopback only.
Not a test: nothing here asserts a timing.
"""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the same configurations and helpers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--log", action="store_true")
    p.add_argument("--workers", type=int, default=0, help="N workers each, unpinned")
    args = p.parse_args()
    workers = max(args.workers, 1)
    proxy_cpu, client_cpu = (None, None) if args.workers else (bench.PROXY_CPU, bench.CLIENT_CPU)
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench.make_certificate()
    for port in bench.APPS:
        bench.spawn([f"{bench.BIN}/hello-app", "--listen", f"127.0.0.1:{port}"], client_cpu,
                    stderr=subprocess.DEVNULL)
        bench.wait_port(port)
    targets = {}
    for k, (name, binary) in enumerate((("old", args.old), ("new", args.new))):
        port, tls = 18300 + k, 18310 + k
        config = (bench.edge_config(args.log, args.log, workers)
                  .replace(f"127.0.0.1:{bench.PORTS['edge-proxy']}", f"127.0.0.1:{port}")
                  .replace(f"127.0.0.1:{bench.TLS_PORTS['edge-proxy']}", f"127.0.0.1:{tls}"))
        path = f"{bench.work}/{name}.yaml"
        with open(path, "w") as f:
            f.write(config)
        proc = bench.spawn([binary, "--config", path], proxy_cpu,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.wait_port(port)
        targets[name] = (proc, port)
    with open(f"{bench.work}/haproxy.cfg", "w") as f:
        f.write(bench.haproxy_config(args.log, args.log, workers))
    haproxy = bench.spawn(["haproxy", "-f", f"{bench.work}/haproxy.cfg", "-db"], proxy_cpu,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_port(bench.PORTS["HAProxy"])
    targets["HAProxy"] = (haproxy, bench.PORTS["HAProxy"])

    headers = {n: [bench.cookie_from(port)] if args.log else [] for n, (_, port) in targets.items()}
    samples = {name: [] for name in targets}
    load = {"cpu": client_cpu, "threads": workers}
    for name, (_, port) in targets.items():
        bench.wrk(port, args.connections, 1, headers[name], **load)  # warm pools and caches
    for _ in range(args.rounds):
        for name, (proc, port) in targets.items():
            u0, s0 = bench.cpu_times(proc.pid)
            r = bench.wrk(port, args.connections, 5, headers[name], **load)
            u1, s1 = bench.cpu_times(proc.pid)
            n = max(r["requests"], 1)
            samples[name].append({"user": (u1 - u0) * 1e6 / n, "sys": (s1 - s0) * 1e6 / n,
                                  "rps": r["rps"], "p99": r["p99_ms"]})
    med = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
           for name, runs in samples.items()}
    print(f"c={args.connections}, {args.rounds} rounds, {'access log + affinity' if args.log else 'plain'}"
          f"{f', {workers} workers unpinned' if args.workers else ''}:")
    print("| binary | CPU µs/request | user | system | requests/s | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, m in med.items():
        print(f"| {name} | {m['user'] + m['sys']:.1f} | {m['user']:.1f} | {m['sys']:.1f} | "
              f"{m['rps']:.0f} | {m['p99']:.2f} |")
    old, new = (med[n]["user"] + med[n]["sys"] for n in ("old", "new"))
    print(f"new/old CPU per request {new / old:.3f}; new/HAProxy "
          f"{new / (med['HAProxy']['user'] + med['HAProxy']['sys']):.2f}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in bench.children:
            bench.stop(p)
        import shutil
        shutil.rmtree(bench.work, ignore_errors=True)
