#!/usr/bin/env python3
"""Two edge-proxy binaries side by side, with HAProxy as the yardstick: the
wall-clock A/B of a change, where bench/callgrind.py gives its instructions.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--connections 64] [--rounds 5] [--log]
                        [--workers N]

Same set-up as bench/run.sh's pinned scenarios (run that once first: it
installs HAProxy and wrk and builds hello-app): each proxy one worker on CPU 1,
wrk and three hello-apps on CPU 0, interleaved 5 s runs (old and new take turns
going first), medians. CPU per request is split into user and system time (from
/proc), since a change to the proxy's own code moves only the first. `--log` turns on the access log and
cookie affinity (HAProxy: `cookie insert` and its log). `--workers N` is
run.py's "2 workers" scenario instead: every proxy N workers, wrk N threads,
nothing pinned. Loopback only.
Not a test: nothing here asserts a timing.
"""

import argparse
import os
import statistics
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
    bench.start_apps(client_cpu)
    targets = {name: bench.start_edge_build(binary, k, args.log, args.log, workers, proxy_cpu)
               for k, (name, binary) in enumerate((("old", args.old), ("new", args.new)))}
    haproxy = bench.start_haproxy(args.log, args.log, workers, proxy_cpu)
    targets["HAProxy"] = (haproxy, bench.PORTS["HAProxy"])
    headers = {n: [bench.cookie_from(port)] if args.log else [] for n, (_, port) in targets.items()}
    samples = {name: [] for name in targets}
    load = {"cpu": client_cpu, "threads": workers}
    for name, (_, port) in targets.items():
        bench.wrk(port, args.connections, 1, headers[name], **load)  # warm pools and caches
    for i in range(args.rounds):
        # The pair takes turns going first: whichever runs right after the
        # other wins or loses by position alone (the same binary twice, one
        # round: 0.75-0.86x).
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        for name in order + ["HAProxy"]:
            proc, port = targets[name]
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
        bench.cleanup()
