#!/usr/bin/env python3
"""Training load for a profile-guided build (an experiment; README, "What
nginx's CPU per request would take"): an edge-proxy built with
`-Cprofile-generate=DIR` serves bench/run.py's plain and affinity + JSON log
configurations under wrk (64, 1, then 64 connections, 4 s each), then stops
cleanly so that it writes its profile into DIR.

    python3 bench/pgo_train.py INSTRUMENTED_EDGE_PROXY

Needs what bench/run.sh installs (wrk, hello-app built). Loopback only.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the same configurations and helpers)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench.make_certificate()
    bench.start_apps()
    for k, (log, affinity) in enumerate([(False, False), (True, True)]):
        proc, port = bench.start_edge_build(binary, k, log, affinity)
        headers = [bench.cookie_from(port)] if affinity else []
        for conns in (64, 1, 64):
            r = bench.wrk(port, conns, 4, headers=headers)
            print(f"{'affinity + log' if affinity else 'plain'}, {conns} connections: "
                  f"{r['rps']:.0f} requests/s, errors: {'; '.join(r['errors']) or 'none'}")
        proc.send_signal(signal.SIGTERM)  # a clean exit writes the profile
        proc.wait(timeout=60)


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.cleanup()
