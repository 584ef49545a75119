//! Hostile and oversized HTTP, sent as raw bytes: what the client gets back, and
//! what (if anything) reached a recording origin behind the proxy.

mod utils;

use std::time::Duration;
use utils::*;

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn ambiguous_framing_and_bad_bytes_are_refused_and_never_forwarded() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(&origin, "");
    let cases: &[(&str, &[u8])] = &[
        ("conflicting Content-Length", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("duplicate Content-Length", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: +5\r\n\r\nhello"),
        ("Content-Length not a number", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5x\r\n\r\nhello"),
        ("conflicting Content-Length list", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("Content-Length past u64", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 99999999999999999999\r\n\r\nhello"),
        ("unknown transfer coding", b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nxxxx"),
        ("chunked not last", b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: b\r\n c\r\n\r\n"),
        ("NUL in a header", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: b\x00c\r\n\r\n"),
        ("bare CR in a header", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: b\rc\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: app.test\r\nContent-Length : 5\r\n\r\nhello"),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n"),
        ("absolute form to an unrouted host", b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: app.test\r\n\r\n"),
    ];
    for (what, raw) in cases {
        let response = raw_request(proxy.http, raw);
        let status = status_of(&response);
        assert!(
            (400..500).contains(&status),
            "{what}: got {:?}",
            String::from_utf8_lossy(&response)
        );
    }
    assert!(
        origin.received().is_empty(),
        "forwarded: {:?}",
        origin.received()
    );
    // Every refusal leaves a trace: an access-log line with its status, and
    // the proxy's own answer counted (whether pingora's parser or our checks
    // refused it).
    eventually("a line per refusal", Duration::from_secs(5), || {
        let refused = proxy.access_log();
        refused.len() >= cases.len() && refused.iter().all(|l| l["status"].as_u64() >= Some(400))
    });
    let m = proxy.metrics();
    let answered: f64 = [400, 404, 413, 431, 501]
        .iter()
        .map(|c| {
            m.sum(
                "edge_proxy_proxy_responses_total",
                &[("code", &c.to_string())],
            )
        })
        .sum();
    assert!(
        answered >= cases.len() as f64,
        "{answered} of {}",
        cases.len()
    );

    // A bad chunk size: bodies stream, so the head may already be upstream when
    // the body turns out malformed; the client gets 400, the upstream request is
    // aborted, and none of the body's bytes are passed on.
    let response = raw_request(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(
        status_of(&response),
        400,
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(origin.received().iter().all(|r| !r.contains("hello")));
    origin.received.lock().unwrap().clear();

    // Content-Length with Transfer-Encoding: as RFC 9112 section 6.1 prescribes
    // (and pingora does before our code sees the request), chunked framing wins,
    // Content-Length is dropped and the connection closes after the response.
    // The origin gets exactly one framing and the smuggled bytes never.
    let response = raw_request(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&response).contains("Connection: close"));
    let received = origin.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        !received[0].to_ascii_lowercase().contains("content-length"),
        "{received:?}"
    );
    assert!(
        !received.iter().any(|r| r.contains("/smuggled")),
        "{received:?}"
    );
    origin.received.lock().unwrap().clear();

    // A well-formed chunked POST still goes through, de-chunked or re-chunked.
    let ok = raw_request(
        proxy.http,
        b"POST /ok HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    assert_eq!(origin.received().len(), 1);
}

#[test]
fn size_limits_answer_431_and_413() {
    let origin = EchoOrigin::start("echo");
    let proxy = proxy_to(
        &origin,
        "limits:\n  max_header_bytes: 4096\n  max_headers: 20\n  max_body_bytes: 1000\n",
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(5000)
    );
    assert_eq!(
        status_of(&raw_request(proxy.http, big_header.as_bytes())),
        431
    );
    let many: String = (0..30).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: app.test\r\n{many}Connection: close\r\n\r\n");
    assert_eq!(status_of(&raw_request(proxy.http, many.as_bytes())), 431);
    let declared = format!(
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "b".repeat(2000)
    );
    assert_eq!(
        status_of(&raw_request(proxy.http, declared.as_bytes())),
        413
    );
    let chunk = "c".repeat(600);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let response = raw_request(proxy.http, chunked.as_bytes());
    assert_eq!(
        status_of(&response),
        413,
        "{}",
        String::from_utf8_lossy(&response)
    );
    // Within the limits: served.
    let fine = format!(
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{}",
        "d".repeat(10)
    );
    assert_eq!(status_of(&raw_request(proxy.http, fine.as_bytes())), 200);
    assert!(origin
        .received()
        .iter()
        .all(|r| !r.contains("X-Big") && !r.contains(&chunk)));
}

#[test]
fn x_forwarded_for_is_kept_only_from_trusted_proxies() {
    let origin = EchoOrigin::start("echo");
    let raw = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nConnection: close\r\n\r\n";

    let untrusting = proxy_to(&origin, "trusted_proxies: [\"10.0.0.0/8\"]\n");
    let _ = raw_request(untrusting.http, raw);
    let head = origin.received().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
    assert!(!head.contains("203.0.113.9"), "{head}");

    let trusting = proxy_to(&origin, "trusted_proxies: [\"127.0.0.0/8\", \"::1\"]\n");
    let _ = raw_request(trusting.http, raw);
    let head = origin.received().pop().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("forwarded: for=203.0.113.9\r\n"), "{head}");
}

#[test]
fn bad_limits_and_ranges_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "listen:\n  http: \"0.0.0.0:80\"\ndiscovery: static\nroutes:\n  - service: a\n    port: 80\nstatic:\n  a: [\"127.0.0.1:1\"]\nlimits:\n  max_headers: 1000\ntrusted_proxies: [\"10.0.0.0/40\", \"nope\"]\n",
    )
    .unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("limits.max_headers: 1000 is out of range"),
        "{stderr}"
    );
    assert!(stderr.contains("trusted_proxies[0]:"), "{stderr}");
    assert!(stderr.contains("trusted_proxies[1]:"), "{stderr}");
}

/// An upstream on 127.0.0.1 answering every request on a connection with
/// `headers` extra response headers (`X-N: N`), then closing.
fn upstream_with_headers(headers: usize) -> std::net::SocketAddr {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                if read_request_head(&mut BufReader::new(&conn)).is_none() {
                    return;
                }
                let extra: String = (0..headers).map(|i| format!("X-{i}: {i}\r\n")).collect();
                let response = format!(
                    "HTTP/1.1 200 OK\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = conn.write_all(response.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn response_headers_pass_in_full_up_to_the_parsers_capacity() {
    // pingora's HTTP/1 parser has 256 header slots (filled in place, not
    // zeroed first: third_party/pingora-core). A response using 250 of them
    // arrives whole; one with 300 is refused as a bad upstream answer (502),
    // and the proxy goes on serving.
    for (count, status) in [(250, 200), (300, 502)] {
        let upstream = upstream_with_headers(count);
        let proxy = Proxy::start(&static_config(
            "  - host: app.test\n    service: hello-app\n    port: 8080\n",
            &[upstream],
        ));
        let response = raw_request(
            proxy.http,
            b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&response);
        assert_eq!(status_of(&response), status, "{count} headers: {text}");
        if status == 200 {
            for i in [0, 123, count - 1] {
                assert!(
                    text.contains(&format!("\r\nx-{i}: {i}\r\n")),
                    "x-{i} missing: {text}"
                );
            }
            assert!(text.ends_with("\r\n\r\nok"), "{text}");
        }
    }
}
