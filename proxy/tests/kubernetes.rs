//! `discovery: kubernetes` end to end: a real edge-proxy, run outside a cluster
//! with KUBECONFIG pointing at a stand-in API server that speaks the
//! EndpointSlice LIST/WATCH wire protocol (utils/kube_api.rs), routing to real
//! hello-app processes on 127.0.0.1-3 that play the pods.

mod utils;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use utils::kube_api::FakeApiServer;
use utils::*;

const SLICE: &str = "hello-app-x7k2p";

struct Cluster {
    api: FakeApiServer,
    apps: Vec<HelloApp>,
    port: u16,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    /// Three "pods" on 127.0.0.1-3, one target port, one slice listing them ready.
    fn start() -> Cluster {
        let port = free_port();
        let apps: Vec<_> = (1..=3)
            .map(|i| {
                HelloApp::start_on(
                    &format!("pod-{i}"),
                    SocketAddr::from(([127, 0, 0, i as u8], port)),
                )
            })
            .collect();
        let api = FakeApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let c = Cluster {
            api,
            apps,
            port,
            _dir: dir,
            kubeconfig,
        };
        c.set(&[
            (1, true, true, false),
            (2, true, true, false),
            (3, true, true, false),
        ]);
        c
    }

    /// Publish the slice: (pod number, ready, serving, terminating).
    fn set(&self, pods: &[(u8, bool, bool, bool)]) {
        let ips: Vec<String> = pods.iter().map(|(i, ..)| format!("127.0.0.{i}")).collect();
        let endpoints: Vec<_> = pods
            .iter()
            .zip(&ips)
            .map(|((_, r, s, t), ip)| (ip.as_str(), *r, *s, *t))
            .collect();
        self.api
            .apply("default", SLICE, "hello-app", self.port, &endpoints);
    }

    fn proxy(&self, routes: &str) -> Proxy {
        let config = format!("listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: kubernetes\nroutes:\n{routes}\n");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Proxy::start_with_env(&config, http, &[("KUBECONFIG", &self.kubeconfig)])
    }
}

const AFFINITY_ROUTE: &str =
    "  - service: hello-app\n    port: 80\n    affinity:\n      cookie: route";

fn ready_endpoints(proxy: &Proxy) -> f64 {
    proxy.metrics().sum(
        "edge_proxy_endpoints",
        &[("service", "default/hello-app:80"), ("state", "ready")],
    )
}

/// Poll until `cond` holds; return how long it took. At most 5 s.
fn served(proxy: &Proxy, cookie: Option<&str>) -> Response {
    let url = proxy.url("/");
    match cookie {
        Some(c) => curl(&["-b", &format!("route={c}"), &url]),
        None => curl(&[&url]),
    }
}

#[test]
fn follows_adds_removals_and_terminating_endpoints_within_a_second() {
    let cluster = Cluster::start();
    let proxy = cluster.proxy(AFFINITY_ROUTE);
    assert_eq!(
        curl(&[&format!("http://{}/readyz", proxy.admin)]).status,
        200
    );

    // All three pods take new sessions.
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        seen.insert(served(&proxy, None).served_by().to_string());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // A session pinned to pod-2.
    let cookie = (0..10)
        .map(|_| served(&proxy, None))
        .find(|r| r.served_by() == "pod-2")
        .and_then(|r| r.cookie_value("route"))
        .expect("a session on pod-2");

    // pod-2 starts terminating but still serves: its session stays, new ones avoid it.
    cluster.set(&[
        (1, true, true, false),
        (2, false, true, true),
        (3, true, true, false),
    ]);
    let took = eventually("pod-2 draining", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 2.0
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for _ in 0..5 {
        let r = served(&proxy, Some(&cookie));
        assert_eq!(r.served_by(), "pod-2");
        assert_eq!(r.set_cookie("route"), None);
    }
    for _ in 0..12 {
        assert_ne!(served(&proxy, None).served_by(), "pod-2");
    }
    let m = proxy.metrics();
    assert_eq!(
        m.sum("edge_proxy_endpoints", &[("state", "serving_terminating")]),
        1.0
    );

    // pod-2 stops serving: its session fails over with a new cookie.
    cluster.set(&[
        (1, true, true, false),
        (2, false, false, true),
        (3, true, true, false),
    ]);
    eventually("pod-2 gone", Duration::from_secs(5), || {
        proxy
            .metrics()
            .sum("edge_proxy_endpoints", &[("state", "serving_terminating")])
            == 0.0
    });
    let r = served(&proxy, Some(&cookie));
    assert_ne!(r.served_by(), "pod-2");
    assert!(r.cookie_value("route").is_some());

    // pod-2 removed and pod-3 removed; then a scale-up brings both back.
    cluster.set(&[(1, true, true, false)]);
    let took = eventually("one endpoint", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 1.0
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for _ in 0..5 {
        assert_eq!(served(&proxy, None).served_by(), "pod-1");
    }
    cluster.set(&[
        (1, true, true, false),
        (2, true, true, false),
        (3, true, true, false),
    ]);
    let took = eventually("three endpoints", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 3.0
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The old cookie for pod-2 pins to it again: the value is the endpoint's.
    assert_eq!(served(&proxy, Some(&cookie)).served_by(), "pod-2");

    // The whole slice deleted: 503, not a hang; the proxy stays up.
    cluster.api.delete("default", SLICE);
    eventually("no endpoints", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 0.0
    });
    assert_eq!(served(&proxy, None).status, 503);
    drop(cluster.apps);
}

#[test]
fn a_410_relists_and_the_last_good_set_serves_meanwhile() {
    let cluster = Cluster::start();
    let proxy = cluster.proxy(AFFINITY_ROUTE);
    let lists_before = cluster.api.lists();
    cluster.api.bookmark();
    // The watch expires and the next LIST is held: requests still succeed.
    cluster.api.hold_lists(true);
    cluster.api.expire_watches();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..6 {
        assert_eq!(served(&proxy, None).status, 200);
    }
    // A change made while the watcher was away is seen after the relist.
    cluster.set(&[(3, true, true, false)]);
    cluster.api.hold_lists(false);
    eventually("relist", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 1.0
    });
    assert!(cluster.api.lists() > lists_before);
    for _ in 0..5 {
        assert_eq!(served(&proxy, None).served_by(), "pod-3");
    }
}

#[test]
fn not_ready_until_synced_and_reloads_re_scope_the_one_watch() {
    let cluster = Cluster::start();
    cluster.api.hold_lists(true);
    let proxy = cluster.proxy(AFFINITY_ROUTE);
    let readyz = format!("http://{}/readyz", proxy.admin);
    let waiting = curl(&[&readyz]);
    assert_eq!(waiting.status, 503);
    assert!(
        waiting.body.contains("default/hello-app:80"),
        "{}",
        waiting.body
    );
    let unknown = served(&proxy, None);
    assert_eq!(unknown.status, 503);
    assert_eq!(unknown.header("retry-after"), Some("1"));
    cluster.api.hold_lists(false);
    eventually("ready", Duration::from_secs(5), || {
        curl(&[&readyz]).status == 200
    });
    assert_eq!(served(&proxy, None).status, 200);

    // A reload that adds a route to another Service re-scopes the watch...
    cluster.api.apply(
        "default",
        "other-abc",
        "other",
        cluster.port,
        &[("127.0.0.1", true, true, false)],
    );
    let two_routes =
        format!("{AFFINITY_ROUTE}\n  - host: other.test\n    service: other\n    port: http");
    proxy.rewrite_config(&format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: kubernetes\nroutes:\n{two_routes}\n"
    ));
    eventually("watch on other", Duration::from_secs(5), || {
        cluster.api.open_watches("other") == 1
    });
    proxy.wait_metrics("generation 2", |m| {
        m.sum("edge_proxy_config_generation", &[]) == 2.0
    });
    let r = curl(&["-H", "Host: other.test", &proxy.url("/")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.served_by(), "pod-1");
    // ...still one watch for both, and hello-app served all along.
    assert_eq!(cluster.api.watches(), 1);
    assert_eq!(cluster.api.open_watches("hello-app"), 1);
    assert_eq!(served(&proxy, None).status, 200);
    // One that removes it drops other from the watch; hello-app keeps its endpoints.
    proxy.rewrite_config(&format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: kubernetes\nroutes:\n{AFFINITY_ROUTE}\n"
    ));
    eventually("watch on other stopped", Duration::from_secs(5), || {
        cluster.api.open_watches("other") == 0 && cluster.api.open_watches("hello-app") == 1
    });
    assert_eq!(cluster.api.watches(), 1);
    for _ in 0..5 {
        assert_eq!(served(&proxy, None).status, 200);
    }
    let m = proxy.metrics();
    assert_eq!(m.sum("edge_proxy_discovery_watches", &[]), 1.0);
}

#[test]
fn after_an_api_server_outage_changes_reach_routing_within_3_s() {
    let cluster = Cluster::start();
    let proxy = cluster.proxy(AFFINITY_ROUTE);
    eventually("three endpoints", Duration::from_secs(5), || {
        ready_endpoints(&proxy) == 3.0
    });

    // Down for 8 s: the last known endpoints keep serving every request.
    cluster.api.set_down(true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(8) {
        assert_eq!(served(&proxy, None).status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    let errors = proxy.metrics().sum(
        "edge_proxy_discovery_errors_total",
        &[("service", "default/hello-app:80")],
    );
    assert!(errors >= 1.0, "the outage was not noticed");
    // A pod went away meanwhile; the API server comes back.
    cluster.set(&[(1, true, true, false), (2, true, true, false)]);
    cluster.api.set_down(false);
    let back = Instant::now();
    while ready_endpoints(&proxy) != 2.0 {
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "the change took more than 3 s after the API server returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "caught up {:?} after the API server returned",
        back.elapsed()
    );
    assert_eq!(cluster.api.watches(), 1);
}

#[test]
fn binds_at_once_while_no_list_is_answered_with_one_watch_for_every_service() {
    let cluster = Cluster::start();
    // Seven routed Services and an API server that answers no list: the proxy
    // binds without waiting (it used to wait 5 s per Service), answers 503 with
    // Retry-After, and serves once the lists arrive.
    cluster.api.hold_lists(true);
    let routes: Vec<String> = (0..6)
        .map(|i| format!("  - host: s{i}.test\n    service: svc-{i}\n    port: 80"))
        .chain(["  - host: hello.test\n    service: hello-app\n    port: 80".to_string()])
        .collect();
    let started = Instant::now();
    let proxy = cluster.proxy(&routes.join("\n"));
    let bound = started.elapsed();
    eprintln!("bound {bound:?} after start with no list answered");
    assert!(bound < Duration::from_secs(3), "bound after {bound:?}");
    let unsynced = curl(&["-H", "Host: hello.test", &proxy.url("/")]);
    assert_eq!(unsynced.status, 503);
    assert_eq!(unsynced.header("retry-after"), Some("1"));
    cluster.api.hold_lists(false);
    let start = Instant::now();
    while curl(&["-H", "Host: hello.test", &proxy.url("/")]).status != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "never synced");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cluster.api.watches(), 1);
    assert_eq!(cluster.api.open_watches("svc-3"), 1);
    assert_eq!(
        curl(&[&format!("http://{}/readyz", proxy.admin)]).status,
        200
    );
}

#[test]
fn an_api_server_refusing_at_start_up_holds_up_nothing_and_is_caught_up_with() {
    let cluster = Cluster::start();
    cluster.api.set_down(true);
    let started = Instant::now();
    let proxy = cluster.proxy(AFFINITY_ROUTE);
    eprintln!(
        "bound {:?} after start with the API server down",
        started.elapsed()
    );
    let unknown = served(&proxy, None);
    assert_eq!(unknown.status, 503);
    assert_eq!(unknown.header("retry-after"), Some("1"));
    let readyz = format!("http://{}/readyz", proxy.admin);
    assert_eq!(curl(&[&readyz]).status, 503);
    std::thread::sleep(Duration::from_secs(3));
    cluster.api.set_down(false);
    let took = eventually(
        "synced after the API server came up",
        Duration::from_secs(3),
        || curl(&[&readyz]).status == 200,
    );
    eprintln!("synced {took:?} after the API server came up");
    assert_eq!(served(&proxy, None).status, 200);
}

#[test]
fn without_an_api_server_start_up_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "listen:\n  http: \"127.0.0.1:0\"\ndiscovery: kubernetes\nroutes:\n  - service: a\n    port: 80\n").unwrap();
    let out = std::process::Command::new(edge_proxy_bin())
        .arg("--config")
        .arg(&config)
        .env("KUBECONFIG", dir.path().join("missing"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("discovery: kubernetes needs an API server"),
        "{stderr}"
    );
}
