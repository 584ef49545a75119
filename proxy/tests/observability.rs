//! Metrics, access log and request ids, checked against what was sent.
//! /metrics is parsed with Prometheus' own parser (prometheus_client, Python).

mod utils;

use std::time::{Duration, Instant};
use utils::*;

const ROUTES: &str = "  - host: app.test\n    service: hello-app\n    port: 8080\n    affinity:\n      cookie: route\n  - host: plain.test\n    path: /p\n    service: hello-app\n    port: 8080";

#[test]
fn counters_equal_what_was_sent_and_every_request_is_logged_once() {
    let apps: Vec<_> = (1..=2)
        .map(|i| HelloApp::start(&format!("app-{i}")))
        .collect();
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));

    // 1 new session + 6 pinned hits, 1 tampered cookie, 4 plain GETs, 2 POSTs, 3 unknown hosts.
    let first = curl(&["-H", "Host: app.test", &proxy.url("/")]);
    let cookie = format!("route={}", first.cookie_value("route").unwrap());
    for _ in 0..6 {
        curl(&["-H", "Host: app.test", "-b", &cookie, &proxy.url("/")]);
    }
    curl(&[
        "-H",
        "Host: app.test",
        "-b",
        "route=nonsense",
        &proxy.url("/"),
    ]);
    for _ in 0..4 {
        curl(&["-H", "Host: plain.test", &proxy.url("/p/x")]);
    }
    for _ in 0..2 {
        let r = curl(&[
            "-H",
            "Host: plain.test",
            "-X",
            "POST",
            "-d",
            "hello",
            &proxy.url("/p"),
        ]);
        assert_eq!(r.status, 405); // hello-app only greets GET
    }
    for _ in 0..3 {
        assert_eq!(
            curl(&["-H", "Host: nowhere.test", &proxy.url("/")]).status,
            404
        );
    }

    let m = proxy.metrics();
    let req = |labels: &[(&str, &str)]| m.sum("edge_proxy_requests_total", labels);
    assert_eq!(
        req(&[
            ("route", "routes[0]"),
            ("host", "app.test"),
            ("code", "200"),
            ("method", "GET")
        ]),
        8.0
    );
    assert_eq!(
        req(&[
            ("route", "routes[1]"),
            ("service", "default/hello-app:8080"),
            ("code", "200")
        ]),
        4.0
    );
    assert_eq!(
        req(&[("route", "routes[1]"), ("method", "POST"), ("code", "405")]),
        2.0
    );
    assert_eq!(req(&[("route", "-"), ("code", "404")]), 3.0);
    assert_eq!(req(&[]), 17.0);
    assert_eq!(
        m.sum("edge_proxy_proxy_responses_total", &[("code", "404")]),
        3.0
    );
    assert_eq!(m.sum("edge_proxy_proxy_responses_total", &[]), 3.0);
    let aff = |outcome| {
        m.sum(
            "edge_proxy_affinity_total",
            &[("route", "routes[0]"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (aff("new"), aff("pinned"), aff("rejected"), aff("repinned")),
        (1.0, 6.0, 1.0, 0.0)
    );
    assert_eq!(
        m.sum("edge_proxy_request_duration_seconds_count", &[]),
        17.0
    );
    assert_eq!(
        m.sum("edge_proxy_upstream_response_seconds_count", &[]),
        14.0
    );
    assert_eq!(m.sum("edge_proxy_endpoints", &[("state", "ready")]), 2.0);
    assert_eq!(
        m.sum(
            "edge_proxy_discovery_synced",
            &[("service", "default/hello-app:8080")]
        ),
        1.0
    );
    assert_eq!(m.sum("edge_proxy_config_generation", &[]), 1.0);
    assert_eq!(m.sum("edge_proxy_config_reloads_total", &[]), 0.0);
    assert!(m.has("edge_proxy_build_info"));
    assert!(m.has("process_resident_memory_bytes"));
    // Bounded labels: no paths or client addresses anywhere.
    for s in &m.samples {
        let labels = s["labels"].to_string();
        assert!(
            !labels.contains("/p/x") && !labels.contains("127.0.0.1"),
            "{s}"
        );
    }

    // The access log: one JSON line per request, with every field.
    let log = wait_for_lines(&proxy, 17);
    assert_eq!(log.len(), 17);
    let fields = [
        "timestamp",
        "client",
        "host",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "route",
        "service",
        "affinity",
        "request_id",
    ];
    for line in &log {
        for f in fields {
            assert!(line.get(f).is_some(), "no {f} in {line}");
        }
    }
    let posts: Vec<_> = log.iter().filter(|l| l["method"] == "POST").collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0]["bytes_in"], 5);
    assert_eq!(posts[0]["status"], 405);
    let misses: Vec<_> = log.iter().filter(|l| l["status"] == 404).collect();
    assert_eq!(misses.len(), 3);
    assert_eq!(misses[0]["upstream"], "-");
    assert_eq!(misses[0]["host"], "nowhere.test");
    let pinned = log.iter().filter(|l| l["affinity"] == "pinned").count();
    assert_eq!(pinned, 6);
    assert!(log
        .iter()
        .all(|l| l["client"].as_str().unwrap().starts_with("127.0.0.1:")));
}

fn wait_for_lines(proxy: &Proxy, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let log = proxy.access_log();
        if log.len() >= n || start.elapsed() > Duration::from_secs(5) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn request_ids_are_kept_or_generated_and_travel_both_ways() {
    let origin = EchoOrigin::start("echo");
    let config = format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\nroutes:\n  - host: echo.test\n    service: echo\n    port: 80\nstatic:\n  echo: [\"{}\"]\n",
        origin.addr
    );
    let proxy = Proxy::start(&config);

    // A sane incoming id is kept, sent upstream and returned.
    let r = curl(&[
        "-H",
        "Host: echo.test",
        "-H",
        "X-Request-Id: trace-42.a_b",
        &proxy.url("/"),
    ]);
    assert_eq!(r.header("x-request-id"), Some("trace-42.a_b"));
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("x-request-id: trace-42.a_b\r\n"),
        "{}",
        r.body
    );

    // None, too long, or odd characters: a fresh 32-hex-digit id.
    let long = "a".repeat(200);
    for given in [
        None,
        Some(long.as_str()),
        Some("has space"),
        Some("<script>"),
    ] {
        let mut args = vec!["-H", "Host: echo.test"];
        let header = given.map(|g| format!("X-Request-Id: {g}"));
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let url = proxy.url("/");
        args.push(&url);
        let r = curl(&args);
        let id = r.header("x-request-id").expect("id").to_string();
        assert_eq!(id.len(), 32, "{given:?} -> {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(r.body.contains(&id), "upstream did not get {id}");
    }

    // The proxy's own answers carry one too, and the log line has the same id.
    let r = curl(&[
        "-H",
        "Host: other.test",
        "-H",
        "X-Request-Id: miss-1",
        &proxy.url("/"),
    ]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("miss-1"));
    let log = wait_for_lines(&proxy, 6);
    assert!(
        log.iter()
            .any(|l| l["request_id"] == "miss-1" && l["status"] == 404),
        "{log:?}"
    );
    assert_eq!(
        proxy
            .metrics()
            .sum("edge_proxy_request_id_rejected_total", &[]),
        3.0
    );
}

#[test]
fn failover_counts_connect_errors_retries_and_repins() {
    let mut apps: Vec<_> = (1..=3)
        .map(|i| HelloApp::start(&format!("app-{i}")))
        .collect();
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));
    let first = curl(&["-H", "Host: app.test", &proxy.url("/")]);
    let victim = first.served_by().to_string();
    apps.iter_mut().find(|a| a.name == victim).unwrap().kill();
    let cookie = format!("route={}", first.cookie_value("route").unwrap());
    let r = curl(&["-H", "Host: app.test", "-b", &cookie, &proxy.url("/")]);
    assert_eq!(r.status, 200);
    let m = proxy.metrics();
    let svc = [("service", "default/hello-app:8080")];
    assert_eq!(m.sum("edge_proxy_upstream_connect_errors_total", &svc), 1.0);
    assert_eq!(m.sum("edge_proxy_upstream_retries_total", &svc), 1.0);
    assert_eq!(
        m.sum("edge_proxy_affinity_total", &[("outcome", "repinned")]),
        1.0
    );
}

#[test]
fn access_log_lines_stay_json_for_hostile_requests_and_none_is_lost_on_sigterm() {
    let origin = EchoOrigin::start("echo");
    let config = format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\ndrain_timeout: 5s\nroutes:\n  - service: echo\n    port: 80\nstatic:\n  echo: [\"{}\"]\n",
        origin.addr
    );
    let mut proxy = Proxy::start(&config);
    // Quotes, backslashes, raw bytes that are not UTF-8 and a Host with a
    // quote: whatever the parser lets through must come out as valid JSON.
    let hostile: [&[u8]; 4] = [
        b"GET /a\"b\\c HTTP/1.1\r\nHost: x\"y\r\nConnection: close\r\n\r\n",
        b"GET /\xff\xfe\xc3(bytes) HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET /%00%1b%22 HTTP/1.1\r\nHost: h\xe9\r\nConnection: close\r\n\r\n",
        b"GET /{\"json\":1} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ];
    // pingora's parser answers 400 to a target that is not UTF-8 before any
    // phase of ours runs: such a request is logged too, as `-` (its head did
    // not parse).
    let mut served = 0;
    for request in hostile {
        let answer = parse_response(&raw_request(proxy.http, request));
        served += usize::from(answer.status != 400);
    }
    assert!(served >= 3, "{served}");
    let refused = hostile.len() - served;
    // 200 plain requests more, then SIGTERM at once: the batch still in the
    // buffer is written before the process exits.
    for _ in 0..200 {
        raw_request(
            proxy.http,
            b"GET /plain HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
    }
    signal(&proxy.child, "TERM");
    let status = wait_exit(&mut proxy.child, Duration::from_secs(10)).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    // access_log() parses every line as JSON and fails the test on one that is not.
    let log = proxy.access_log();
    assert_eq!(log.len(), hostile.len() + 200, "lines lost");
    assert_eq!(
        log.iter()
            .filter(|l| l["status"] == 400 && l["path"] == "-")
            .count(),
        refused
    );
    assert!(log.iter().any(|l| l["path"] == "/a\"b\\c"), "{log:?}");
    assert!(log.iter().any(|l| l["host"] == "x\"y"), "{log:?}");
}
