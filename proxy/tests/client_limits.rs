//! What one client can hold of the proxy: a slowloris head is cut off, idle
//! keep-alive connections are closed, and connections beyond the limit wait,
//! then are closed, without disturbing the ones already served.

mod utils;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use utils::*;

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One GET on an open connection; the response head and body, read by its Content-Length.
fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    read_response(s)
}

/// Whether the proxy closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_slowloris_head_is_cut_off_at_the_header_timeout() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(&origin, "limits:\n  header_timeout: 1s\n");
    let mut slow = connect(&proxy);
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .unwrap();
    // A header byte every 200 ms: each read is quick, the head never ends.
    let mut cut_off = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"X").is_err() || closed_within(&mut slow, Duration::from_millis(1)) {
            cut_off = true;
            break;
        }
    }
    let after = started.elapsed();
    assert!(cut_off, "still open after {after:?}");
    assert!(
        after < Duration::from_secs(5),
        "cut off only after {after:?}"
    );
    assert!(origin.received().is_empty());
    // Others are served meanwhile and after.
    assert!(get(&mut connect(&proxy)).starts_with("HTTP/1.1 200"));
    let m = proxy.metrics();
    assert_eq!(
        m.sum(
            "edge_proxy_client_connections_closed_total",
            &[("reason", "header_timeout")]
        ),
        1.0
    );
}

#[test]
fn a_slow_request_head_that_completes_in_time_is_served() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(&origin, "limits:\n  header_timeout: 3s\n");
    let mut s = connect(&proxy);
    for part in [
        &b"GET /x HTTP/1.1\r\n"[..],
        b"Host: app.test\r\n",
        b"X-A: b\r\n",
    ] {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    s.write_all(b"\r\n").unwrap();
    let mut response = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    response.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn idle_keep_alive_connections_are_closed_and_busy_ones_reused() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "limits:\n  idle_timeout: 1s\n  header_timeout: 1s\n",
    );
    let mut s = connect(&proxy);
    assert!(get(&mut s).starts_with("HTTP/1.1 200"));
    // Within the idle time the same connection serves the next request.
    std::thread::sleep(Duration::from_millis(300));
    assert!(get(&mut s).starts_with("HTTP/1.1 200"));
    // Then it is closed after about a second of silence.
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "never closed"
    );
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(800),
        "closed after only {idle:?}"
    );
}

#[test]
fn connections_beyond_the_limit_wait_for_a_slot_then_are_closed() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "limits:\n  max_connections: 2\n  header_timeout: 2s\n  idle_timeout: 30s\n",
    );
    // Proxy::start's readiness probe is a connection too: let it be gone
    // before the two slots are taken (on a busy machine it can linger).
    proxy.wait_metrics("no connection open", |m| {
        m.sum("edge_proxy_client_connections", &[]) == 0.0
    });
    let mut first = connect(&proxy);
    let mut second = connect(&proxy);
    assert!(get(&mut first).starts_with("HTTP/1.1 200"));
    assert!(get(&mut second).starts_with("HTTP/1.1 200"));
    proxy.wait_metrics("two open connections", |m| {
        m.sum("edge_proxy_client_connections", &[]) == 2.0
    });

    // A third gets no answer while both slots are held, and is closed after the wait.
    let mut third = connect(&proxy);
    third
        .write_all(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut third, Duration::from_secs(6)),
        "third was never closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early"
    );
    proxy.wait_metrics("one refused connection", |m| {
        m.sum(
            "edge_proxy_client_connections_closed_total",
            &[("reason", "connection_limit")],
        ) == 1.0
    });

    // A fourth waits while the slots are full and is served once one frees up.
    let waiting = std::thread::spawn({
        let addr = proxy.http;
        move || {
            let mut fourth = TcpStream::connect(addr).unwrap();
            fourth
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            get(&mut fourth)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    assert!(waiting.join().unwrap().starts_with("HTTP/1.1 200"));
    // The connection kept open all along was never disturbed.
    assert!(get(&mut second).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_trusted_proxy_is_not_held_to_one_clients_connections() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "trusted_proxies: [\"127.0.0.1/32\"]\nlimits:\n  idle_timeout: 30s\n  per_client:\n    connections: 1\n",
    );
    // A load balancer at 127.0.0.1 carries many clients: three connections
    // from it are all served.
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(&proxy)).collect();
    for s in &mut open {
        assert!(get(s).starts_with("HTTP/1.1 200"));
    }
    // Nothing was refused (connections_beyond_a_clients_cap_... shows the
    // same cap refusing an untrusted address's second connection).
    assert_eq!(
        proxy.metrics().sum(
            "edge_proxy_client_limited_total",
            &[("reason", "client_connections")]
        ),
        0.0
    );
}

#[test]
fn bad_client_limits_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listen:\n  http: \"127.0.0.1:1\"\ndiscovery: static\nroutes:\n  - service: a\n    port: 80\nstatic:\n  a: [\"127.0.0.1:2\"]\nlimits:\n  header_timeout: soon\n  idle_timeout: 0s\n  max_connections: 0\n  limited_status: 200\n  per_client:\n    requests_per_second: 0\n    connections: many\n    exempt: [\"10.0.0.0/33\"]\n    burst_size: 3\n",
    )
    .unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "limits.header_timeout",
        "limits.idle_timeout",
        "limits.max_connections",
        "limits.limited_status",
        "limits.per_client.requests_per_second",
        "limits.per_client.connections",
        "limits.per_client.exempt[0]",
        "limits.per_client.burst_size",
    ] {
        assert!(err.contains(field), "{field} not named in: {err}");
    }
}

fn count(results: &[(u16, String)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[test]
fn a_flooding_address_gets_429s_while_others_and_exempt_ones_are_served() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "limits:\n  per_client:\n    requests_per_second: 5\n    burst: 5\n    exempt: [\"127.0.0.3/32\"]\n",
    );
    let url = proxy.url("/x");
    let host = ["-H", "Host: app.test"];
    // 40 requests as fast as one connection goes: the burst (5 + the one)
    // and what the rate refills meanwhile are served, the rest get 429.
    let flood = requests_from("127.0.0.1", &url, 40, &host);
    assert_eq!(flood.len(), 40, "{flood:?}");
    let served = count(&flood, 200);
    assert!((6..=12).contains(&served), "{served} served: {flood:?}");
    assert_eq!(count(&flood, 429), 40 - served, "{flood:?}");
    let (_, retry_after) = flood.iter().find(|(s, _)| *s == 429).unwrap();
    assert_eq!(retry_after, "1", "Retry-After: one second's refill");
    // Limited whatever it asks for, a host no route serves included.
    let unrouted = requests_from("127.0.0.1", &url, 1, &["-H", "Host: nowhere.test"]);
    assert_eq!(unrouted[0].0, 429);
    // Another address is its own client; an exempt one is never limited.
    assert_eq!(count(&requests_from("127.0.0.2", &url, 3, &host), 200), 3);
    assert_eq!(count(&requests_from("127.0.0.3", &url, 40, &host), 200), 40);
    // The origin saw only what was let through.
    assert_eq!(origin.received().len(), served + 3 + 40);

    // Counted by reason; logged once for the client, not once per request.
    let limited = proxy
        .wait_metrics("limited requests counted", |m| {
            m.sum(
                "edge_proxy_client_limited_total",
                &[("reason", "client_rate")],
            ) > 0.0
        })
        .sum(
            "edge_proxy_client_limited_total",
            &[("reason", "client_rate")],
        );
    assert_eq!(limited as usize, 40 - served + 1);
    let log = proxy.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("client over its limit") && l.contains("127.0.0.1"))
        .count();
    assert_eq!(lines, 1, "{log}");
    // The refill: a second later the client is served again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(requests_from("127.0.0.1", &url, 1, &host)[0].0, 200);

    // Reloadable: without the limit, the flood is served.
    proxy.rewrite_config(&format!(
        "listen:\n  http: \"{}\"\nadmin: \"{}\"\ndiscovery: static\nroutes:\n  - host: app.test\n    service: echo\n    port: 80\nstatic:\n  echo: [\"{}\"]\nlimits:\n  limited_status: 503\n",
        proxy.http, proxy.admin, origin.addr
    ));
    eventually("the reload", Duration::from_secs(10), || {
        count(&requests_from("127.0.0.1", &url, 20, &host), 200) == 20
    });
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_rate() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "trusted_proxies: [\"127.0.0.1/32\"]\nlimits:\n  limited_status: 503\n  per_client:\n    requests_per_second: 1\n    burst: 0\n",
    );
    let url = proxy.url("/x");
    let from = |client: &str, n| {
        let xff = format!("X-Forwarded-For: {client}");
        requests_from("127.0.0.1", &url, n, &["-H", "Host: app.test", "-H", &xff])
    };
    let first = from("203.0.113.1", 5);
    assert_eq!(first[0].0, 200, "{first:?}");
    // The configured status instead of 429.
    assert_eq!(count(&first, 503), 4, "{first:?}");
    assert_eq!(from("203.0.113.2", 1)[0].0, 200);
    // Not behind a trusted proxy: the peer is the client.
    let direct = requests_from("127.0.0.2", &url, 2, &["-H", "Host: app.test"]);
    assert_eq!(direct[0].0, 200);
    assert_eq!(direct[1].0, 503);
}

#[test]
fn connections_beyond_a_clients_cap_are_closed_before_a_request_is_read() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "limits:\n  idle_timeout: 30s\n  per_client:\n    connections: 2\n",
    );
    proxy.wait_metrics("no connection open", |m| {
        m.sum("edge_proxy_client_connections", &[]) == 0.0
    });
    let mut first = connect(&proxy);
    let mut second = connect(&proxy);
    assert!(get(&mut first).starts_with("HTTP/1.1 200"));
    assert!(get(&mut second).starts_with("HTTP/1.1 200"));
    // A third from the same address: closed at once, unanswered.
    let mut third = connect(&proxy);
    let _ = third.write_all(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(closed_within(&mut third, Duration::from_secs(2)));
    proxy.wait_metrics("one connection refused", |m| {
        m.sum(
            "edge_proxy_client_limited_total",
            &[("reason", "client_connections")],
        ) == 1.0
    });
    // Another address is not affected.
    let other = requests_from("127.0.0.2", &proxy.url("/x"), 1, &["-H", "Host: app.test"]);
    assert_eq!(other[0].0, 200);
    // A closed connection gives its place back.
    drop(first);
    eventually("a place given back", Duration::from_secs(5), || {
        let mut again = connect(&proxy);
        let _ = again.write_all(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let mut byte = [0u8; 1];
        matches!(again.read(&mut byte), Ok(1))
    });
    // The connections kept open were never disturbed.
    assert!(get(&mut second).starts_with("HTTP/1.1 200"));
}
