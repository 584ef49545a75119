//! The dashboard and the alert rules against a real Prometheus (Debian's
//! `prometheus` on loopback, scraping every second) while load runs through
//! two real proxies: every query of k8s/monitoring/dashboard.json returns data,
//! and every alert of k8s/monitoring/alerts.yaml becomes pending.
//!
//! What happens during the run: wrk traffic on an affinity route, pinned and
//! re-pinned sessions, a Service whose only endpoint dies (502s), a Service with
//! no endpoints (503s), a rejected reload, HTTPS with a certificate two days from
//! expiry, idle clients up to 90% of `max_connections`, a memory limit the
//! process is over, and a second proxy whose Kubernetes API server never
//! answers (discovery not synced). Grafana itself is not run: its variables are
//! substituted the way it would with "All" selected.
//!
//! `EDGE_PROXY_DASHBOARD_DUMP=FILE` writes every panel's answers as JSON (what
//! k8s/monitoring/plot.py draws for README), `EDGE_PROXY_MONITORING_LOAD=SECS`
//! lengthens the load phase (default 8).

mod utils;

use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use utils::*;

/// Grafana's `$__rate_interval` for a 1 s scrape interval is 4 s; one more
/// sample of margin against a scrape that lands late.
const RATE_INTERVAL: &str = "5s";
/// Idle clients held open: 36 of `max_connections: 40` is 90% (alert at 80%).
const IDLE_CLIENTS: usize = 36;

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo_root().join("k8s/monitoring/alerts.yaml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: edge-proxy\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's `prometheus` package; scripts/ci-deps.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, &mut child, "prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually("Prometheus ready", Duration::from_secs(20), || {
            curl(&[&ready]).status == 200
        });
        prometheus
    }

    /// GET an API path with form parameters; the `data` of a success answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut args = vec!["-G".to_string(), format!("{}{path}", self.url)];
        for (k, v) in params {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let response = curl(&args);
        let body: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{path} {params:?}: not JSON ({e}): {}", response.body));
        assert_eq!(
            body["status"], "success",
            "{path} {params:?} was refused: {body}"
        );
        body["data"].clone()
    }

    /// Names of the alerts pending or firing now.
    fn active_alerts(&self) -> Vec<String> {
        let data = self.api("/api/v1/alerts", &[]);
        let mut names: Vec<String> = data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every panel's title with its queries, as Grafana would send them with "All"
/// selected in every variable.
fn dashboard_queries() -> Vec<(String, Vec<String>)> {
    let path = repo_root().join("k8s/monitoring/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let Some(targets) = panel["targets"].as_array() else {
            continue; // a row
        };
        let exprs = targets
            .iter()
            .map(|t| {
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", RATE_INTERVAL)
                    .replace("$instance", ".*")
                    .replace("$route", ".*")
                    .replace("$service", ".*")
            })
            .collect::<Vec<_>>();
        assert!(
            exprs.iter().all(|e| !e.contains('$')),
            "a variable the test does not know: {exprs:?}"
        );
        panels.push((panel["title"].as_str().unwrap().to_string(), exprs));
    }
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    panels
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One plain request on a new connection, then the connection stays open idle.
fn idle_client(addr: SocketAddr) -> TcpStream {
    use std::io::{Read, Write};
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200");
    conn
}

#[test]
fn every_dashboard_query_returns_data_and_every_alert_goes_pending() {
    let load_seconds: u64 = std::env::var("EDGE_PROXY_MONITORING_LOAD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
        .clamp(1, 600);
    let mut apps: Vec<HelloApp> = (1..=3)
        .map(|i| HelloApp::start(&format!("app-{i}")))
        .collect();
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "app", "app.test", "monitoring");
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "listen:\n  http: \"{{http}}\"\n  https: \"{https}\"\nadmin: \"{{admin}}\"\n\
         discovery: static\nlimits:\n  max_connections: 40\n\
         tls:\n  - hosts: [app.test]\n    cert: {dir}/app.crt\n    key: {dir}/app.key\n\
         routes:\n\
         \x20 - host: app.test\n    service: hello-app\n    port: 8080\n    affinity:\n      cookie: route\n\
         \x20 - host: solo.test\n    service: solo\n    port: 8080\n\
         \x20 - host: empty.test\n    service: nobody\n    port: 8080\n\
         static:\n  hello-app: [\"{a1}\", \"{a2}\"]\n  solo: [\"{a3}\"]\n  nobody: []\n",
        dir = certs.path().display(),
        a1 = apps[0].addr,
        a2 = apps[1].addr,
        a3 = apps[2].addr,
    );
    // A 1 MiB limit the process is certainly over: the memory alert's input.
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(
        &config,
        http,
        &[("EDGE_PROXY_MEMORY_LIMIT", Path::new("1048576"))],
    );
    // A second node whose API server never answers: discovery stays unsynced.
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("kubeconfig");
    let dead = free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster: {{ server: \"http://127.0.0.1:{dead}\" }}\n\
             users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: dead\n  context: {{ cluster: dead, user: nobody }}\n\
             current-context: dead\n"
        ),
    )
    .unwrap();
    let unsynced = Proxy::start_with_env(
        "listen:\n  http: \"{http}\"\nadmin: \"{admin}\"\ndiscovery: kubernetes\nroutes:\n  - service: hello-app\n    port: 8080\n",
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        &[("KUBECONFIG", &kubeconfig)],
    );

    // A third node whose proxy dies once it has been scraped.
    let doomed = Proxy::start(&static_config(
        "  - service: hello-app\n    port: 8080\n",
        &[apps[0].addr],
    ));

    let prometheus = Prometheus::start(&[proxy.admin, unsynced.admin, doomed.admin]);
    let started = unix_now();
    eventually("every target up", Duration::from_secs(20), || {
        let up = prometheus.api("/api/v1/query", &[("query", "sum(up)")]);
        up["result"][0]["value"][1] == "3"
    });
    drop(doomed);

    // Load: wrk on the affinity route (every request a new session) while
    // sessions are pinned, moved off a dying endpoint, and a Service dies.
    let wrk = Command::new("wrk")
        .args(["-t1", "-c2", &format!("-d{load_seconds}s")])
        .args(["-H", "Host: app.test", &proxy.url("/")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wrk");
    for _ in 0..5 {
        assert_eq!(
            curl(&["-H", "Host: solo.test", &proxy.url("/")]).status,
            200
        );
        assert_eq!(
            curl(&["-H", "Host: empty.test", &proxy.url("/")]).status,
            503
        );
    }
    let first = curl(&["-H", "Host: app.test", &proxy.url("/")]);
    let cookie = format!("route={}", first.cookie_value("route").unwrap());
    let pinned_to = first.served_by().to_string();
    for _ in 0..5 {
        let r = curl(&["-H", "Host: app.test", "-b", &cookie, &proxy.url("/")]);
        assert_eq!(r.served_by(), pinned_to);
    }
    let https_url = format!("https://app.test:{}/", https.port());
    let resolve = format!("app.test:{}:127.0.0.1", https.port());
    let tls = curl(&[
        "-k",
        "--resolve",
        &resolve,
        "-H",
        "Host: app.test",
        &https_url,
    ]);
    assert_eq!(tls.status, 200);
    std::thread::sleep(Duration::from_secs(load_seconds / 2));

    // The pinned endpoint and the solo Service's only endpoint go away.
    let pinned = apps.iter().position(|a| a.name == pinned_to).unwrap();
    apps[pinned].kill();
    apps[2].kill();
    let moved = curl(&["-H", "Host: app.test", "-b", &cookie, &proxy.url("/")]);
    assert_eq!(moved.status, 200);
    assert_ne!(moved.served_by(), pinned_to);
    // Spread over seconds, as errors from a dead endpoint come: a counter
    // series born with all its errors at once shows no rate until it grows.
    for _ in 0..10 {
        assert_eq!(
            curl(&["-H", "Host: solo.test", &proxy.url("/")]).status,
            502
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A rejected reload: the running configuration stays.
    proxy.rewrite_config("listen:\n  http: \"{http}\"\nroutes: []\n");
    proxy.wait_metrics("the rejected reload", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]) >= 1.0
    });
    let wrk = wrk.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&wrk.stdout);
    assert!(
        wrk.status.success() && summary.contains("requests in"),
        "{summary}"
    );

    // Idle clients after the load, so the held share is exactly 36 of 40.
    let idle: Vec<TcpStream> = (0..IDLE_CLIENTS).map(|_| idle_client(proxy.http)).collect();
    proxy.wait_metrics("the idle clients", |m| {
        m.sum("edge_proxy_client_connections", &[]) >= IDLE_CLIENTS as f64
    });

    // Every alert pending (or firing) within the next seconds.
    let expected = [
        "EdgeProxyCertificateExpiringSoon",
        "EdgeProxyConfigReloadFailing",
        "EdgeProxyConnectionsNearLimit",
        "EdgeProxyDiscoveryNotSynced",
        "EdgeProxyDown",
        "EdgeProxyHighErrorRatio",
        "EdgeProxyMemoryNearLimit",
        "EdgeProxyServiceNoReadyEndpoints",
    ];
    let start = Instant::now();
    loop {
        let active = prometheus.active_alerts();
        if expected.iter().all(|e| active.iter().any(|a| a == e)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "alerts not pending: {:?} (active: {active:?})",
            expected
                .iter()
                .filter(|e| !active.iter().any(|a| a == *e))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let rules: Vec<String> = prometheus.api("/api/v1/rules", &[])["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules.len(),
        expected.len(),
        "alerts.yaml has more alerts than the test: {rules:?}"
    );

    // Every dashboard query over the run: parses, and has at least one number.
    let end = unix_now();
    let (start_s, end_s) = (format!("{started:.3}"), format!("{end:.3}"));
    let mut dump = serde_json::Map::new();
    let mut empty = Vec::new();
    for (title, exprs) in dashboard_queries() {
        let mut answers = Vec::new();
        for expr in &exprs {
            let data = prometheus.api(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start_s),
                    ("end", &end_s),
                    ("step", "1"),
                ],
            );
            let has_number = data["result"].as_array().unwrap().iter().any(|series| {
                series["values"].as_array().unwrap().iter().any(|v| {
                    v[1].as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                })
            });
            if !has_number {
                empty.push(format!("{title}: {expr}"));
            }
            answers.push(serde_json::json!({ "expr": expr, "result": data["result"] }));
        }
        dump.insert(title, Value::Array(answers));
    }
    if let Ok(path) = std::env::var("EDGE_PROXY_DASHBOARD_DUMP") {
        std::fs::write(path, serde_json::to_string(&dump).unwrap()).unwrap();
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    drop(idle);
}
