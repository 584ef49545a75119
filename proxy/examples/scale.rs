//! Control-plane cost at cluster size (bench/scale.sh): a real edge-proxy
//! against the stand-in API server (tests/utils/kube_api.rs) holding N
//! Services, each with an Ingress and an EndpointSlice, for N in the sizes
//! given. Per size it reports: time until every host routes (each host
//! answered 200 by a real hello-app), RSS then, CPU per EndpointSlice update
//! and CPU per Ingress update (the proxy's own utime+stime from /proc, minus
//! its idle rate over the same time).
//!
//!   cargo run --example scale -- target/release/edge-proxy target/release/hello-app 100 1000 10000
//!
//! Every address is on 127.0.0.0/8; every loop is bounded.

#[path = "../tests/utils/kube_api.rs"]
#[allow(dead_code)]
mod kube_api;

use kube_api::FakeApiServer;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// GET on a kept-alive connection: the status code, and whether the
/// connection may be used again (`None`: it broke).
fn get(conn: &mut BufReader<TcpStream>, host: &str, path: &str) -> Option<(u16, bool)> {
    // One write: a request in pieces waits on Nagle and a delayed ACK (40 ms).
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut reusable) = (0usize, true);
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            reusable = false;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    Some((status, reusable))
}

fn ingress(i: usize, path: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
        "spec": {"ingressClassName": "edge-proxy", "rules": [{"host": format!("svc-{i}.test"), "http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": format!("svc-{i}"), "port": {"number": 80}}}}
        ]}}]}
    })
}

fn slice(api: &FakeApiServer, i: usize, app_port: u16, ready: bool) {
    api.apply(
        "default",
        &format!("svc-{i}-abcde"),
        &format!("svc-{i}"),
        app_port,
        &[
            ("127.0.0.1", true, true, false),
            ("127.0.0.2", ready, true, !ready),
        ],
    );
}

struct Row {
    services: usize,
    /// `None`: not every host routed within the deadline.
    routed: Option<Duration>,
    hosts_routed: usize,
    rss: f64,
    slice_update_ms: f64,
    ingress_update_ms: f64,
}

fn measure(proxy_bin: &str, app_port: u16, n: usize) -> Row {
    let dir = std::env::temp_dir().join(format!("edge-proxy-scale-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = FakeApiServer::start();
    api.put(
        "ingressclasses",
        json!({"metadata": {"name": "edge-proxy"}, "spec": {"controller": "edge-proxy.io/ingress-controller"}}),
    );
    for i in 0..n {
        api.put("ingresses", ingress(i, "/"));
        slice(&api, i, app_port, true);
    }
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  http: \"{http}\"\nadmin: \"{admin}\"\ndiscovery: kubernetes\nthreads: 1\nlogging:\n  access: off\ningress:\n  publish_status: false\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut proxy: Child = Command::new(proxy_bin)
        .args(["--config", config.to_str().unwrap()])
        .env("KUBECONFIG", api.kubeconfig(&dir))
        .env("EDGE_PROXY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = proxy.id();

    // Every host routes: each answers 200 from hello-app, on one connection.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next = 0;
    let mut conn: Option<BufReader<TcpStream>> = None;
    while next < n {
        assert!(
            Instant::now() < deadline,
            "{n} services: not all hosts route after 300 s"
        );
        let c = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect(http) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(BufReader::new(s))
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let asked = Instant::now();
        let answer = get(c, &format!("svc-{next}.test"), "/");
        if std::env::var_os("SCALE_DEBUG").is_some() {
            eprintln!(
                "svc-{next}: {answer:?} in {:?} at {:?}",
                asked.elapsed(),
                started.elapsed()
            );
        }
        if !matches!(answer, Some((_, true))) {
            conn = None;
        }
        if matches!(answer, Some((200, _))) {
            next += 1;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let routed = Some(started.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_mib(pid);

    // Idle rate, then updates over the same span, then the difference.
    let span = Duration::from_secs(4);
    let idle_start = cpu_seconds(pid);
    std::thread::sleep(span);
    let idle_rate = (cpu_seconds(pid) - idle_start) / span.as_secs_f64();

    let per_update = |updates: usize, apply: &dyn Fn(usize)| {
        let every = span / updates as u32;
        let t0 = Instant::now();
        let c0 = cpu_seconds(pid);
        for u in 0..updates {
            apply(u);
            std::thread::sleep(every);
        }
        // Until the proxy is idle again: a slow one may still be catching up.
        let settle = Instant::now() + Duration::from_secs(120);
        loop {
            let before = cpu_seconds(pid);
            std::thread::sleep(Duration::from_millis(500));
            let busy = cpu_seconds(pid) - before > idle_rate * 0.5 + 0.02;
            if !busy || Instant::now() > settle {
                break;
            }
        }
        let spent = cpu_seconds(pid) - c0 - idle_rate * t0.elapsed().as_secs_f64();
        spent.max(0.0) / updates as f64 * 1000.0
    };
    // A pod of service k turns not-ready, then ready again: two real changes.
    let slice_update_ms = per_update(200, &|u| slice(&api, (u * 7919) % n, app_port, u % 2 == 1));
    // An Ingress gains a path (and loses it again).
    let ingress_updates = if n >= 10_000 { 20 } else { 40 };
    let ingress_update_ms = per_update(ingress_updates, &|u| {
        let path = if u % 2 == 0 { "/v2" } else { "/" };
        api.put("ingresses", ingress((u * 7919) % n, path));
    });
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        services: n,
        routed,
        hosts_routed: n,
        rss,
        slice_update_ms,
        ingress_update_ms,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (proxy_bin, app_bin) = (&args[0], &args[1]);
    let sizes: Vec<usize> = args[2..].iter().map(|s| s.parse().unwrap()).collect();
    let app_port = free_port();
    let mut app = Command::new(app_bin)
        .args(["--listen", &format!("127.0.0.1:{app_port}")])
        .env("POD_NAME", "scale")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    println!("| Services | every host routes after | RSS then | CPU per EndpointSlice update | CPU per Ingress update |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let r = measure(proxy_bin, app_port, n);
        match r.routed {
            Some(routed) => println!(
                "| {} | {:.1} s | {:.0} MiB | {:.3} ms | {:.1} ms |",
                r.services,
                routed.as_secs_f64(),
                r.rss,
                r.slice_update_ms,
                r.ingress_update_ms
            ),
            None => println!(
                "| {} | not within 300 s ({next_host} hosts routed) | | | |",
                r.services,
                next_host = r.hosts_routed
            ),
        }
    }
    let _ = app.kill();
    let _ = app.wait();
}
