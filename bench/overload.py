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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the same configurations and helpers)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    conns, seconds, binaries = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench.make_certificate()
    bench.start_apps()
    targets = [(binary, bench.start_edge_build(binary, k, False, False)[1])
               for k, binary in enumerate(binaries)]
    bench.start_haproxy(False, False)
    targets.append(("HAProxy", bench.PORTS["HAProxy"]))
    for name, port in targets:
        r = bench.wrk(port, conns, seconds)
        print(f"{name}: {r['rps']:.0f} requests/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"errors: {'; '.join(r['errors']) or 'none'}")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.cleanup()
