//! The HTTPS listener: certificates by SNI (exact, wildcard, default), HTTP/2 by
//! ALPN, Secure cookies, redirects to https, and certificate reload, with real
//! certificates made by the openssl command and curl as the client.

mod utils;

use std::process::Command;
use std::time::{Duration, Instant};
use utils::*;

struct Https {
    proxy: Proxy,
    port: u16,
    dir: tempfile::TempDir,
    _app: HelloApp,
    _echo: EchoOrigin,
}

impl Https {
    fn start() -> Https {
        let dir = tempfile::tempdir().unwrap();
        make_cert(dir.path(), "default", "default.test", "v1");
        make_cert(dir.path(), "a", "a.test", "v1");
        make_cert(dir.path(), "wild", "*.b.test", "v1");
        let app = HelloApp::start("app-1");
        let echo = EchoOrigin::start("echo");
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"listen:
  http: "{{http}}"
  https: "127.0.0.1:{port}"
admin: "{{admin}}"
discovery: static
tls:
  - hosts: [default.test]
    cert: {d}/default.crt
    key: {d}/default.key
  - hosts: [a.test]
    cert: {d}/a.crt
    key: {d}/a.key
  - hosts: ["*.b.test"]
    cert: {d}/wild.crt
    key: {d}/wild.key
routes:
  - host: ws.b.test
    service: echo
    port: 80
  - host: a.test
    service: hello-app
    port: 8080
    redirect_https: true
    affinity: {{ cookie: route }}
  - service: hello-app
    port: 8080
static:
  hello-app: ["{}"]
  echo: ["{}"]
"#,
            app.addr, echo.addr
        );
        let proxy = Proxy::start(&config);
        Https {
            proxy,
            port,
            dir,
            _app: app,
            _echo: echo,
        }
    }

    /// curl over TLS to `host` (resolved to 127.0.0.1); returns (output, stderr).
    fn curl(&self, host: &str, extra: &[&str]) -> (String, String) {
        let resolve = format!("{host}:{}:127.0.0.1", self.port);
        let url = format!("https://{host}:{}/", self.port);
        let out = Command::new("curl")
            .args(["-sS", "-i", "-v", "--max-time", "10", "--resolve", &resolve])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn subject(&self, host: &str) -> String {
        let (_, err) = self.curl(host, &["-k", "-o", "/dev/null"]);
        err.lines()
            .find_map(|l| l.trim_start_matches("* ").trim().strip_prefix("subject: "))
            .unwrap_or_else(|| panic!("no subject in {err}"))
            .to_string()
    }
}

#[test]
fn certificates_are_chosen_by_sni_and_verify() {
    let h = Https::start();
    let ca = |f: &str| h.dir.path().join(format!("{f}.crt")).display().to_string();
    // Exact and wildcard names verify against their own certificate.
    let (out, err) = h.curl("a.test", &["--cacert", &ca("a")]);
    assert!(
        out.starts_with("HTTP/2 200") || out.starts_with("HTTP/1.1 200"),
        "{out}{err}"
    );
    let (out, err) = h.curl("shop.b.test", &["--cacert", &ca("wild")]);
    assert!(out.contains(" 200"), "{out}{err}");
    assert!(
        h.subject("shop.b.test").contains("CN=*.b.test")
            || h.subject("shop.b.test").contains("CN = *.b.test")
    );
    // Unknown names get the first certificate.
    assert!(h.subject("unknown.test").contains("default.test"));
}

#[test]
fn http2_by_alpn_secure_cookies_and_https_redirects() {
    let h = Https::start();
    let (out, _) = h.curl("a.test", &["-k", "--http2"]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let set_cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert!(out.contains("Hello world from app-1!"));
    let (out, _) = h.curl("a.test", &["-k", "--http1.1"]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // Plain HTTP on a redirect_https route: 308 to the same URL on https.
    let r = curl(&["-H", "Host: a.test", &h.proxy.url("/cart?x=1")]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{}/cart?x=1", h.port).as_str())
    );
    // Routes without it still serve plain HTTP, without Secure.
    let r = curl(&["-H", "Host: other.test", &h.proxy.url("/")]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let h = Https::start();
    assert!(h.subject("a.test").contains("v1"));
    make_cert(h.dir.path(), "a", "a.test", "v2");
    let start = Instant::now();
    while !h.subject("a.test").contains("v2") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "renewal not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A key that does not match its certificate: rejected, v2 stays.
    let d = h.dir.path();
    make_cert(d, "other", "a.test", "v3");
    std::fs::copy(d.join("other.crt"), d.join("a.crt")).unwrap();
    h.proxy.wait_metrics("a rejected TLS reload", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]) >= 1.0
    });
    assert!(h.subject("a.test").contains("v2"));
    assert!(
        h.proxy.log().contains("TLS certificates rejected"),
        "{}",
        h.proxy.log()
    );
    // The rejection holds while the files stay broken: the flag the alert
    // reads stays down, nothing is "reloaded", and it is counted once.
    std::thread::sleep(Duration::from_secs(2));
    let m = h.proxy.metrics();
    assert_eq!(m.sum("edge_proxy_config_last_reload_successful", &[]), 0.0);
    assert_eq!(
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    let log = h.proxy.log();
    let after = &log[log.find("TLS certificates rejected").unwrap()..];
    assert!(!after.contains("TLS certificates reloaded"), "{after}");
    // Fixed: served, and the flag is up again.
    make_cert(d, "a", "a.test", "v4");
    h.proxy.wait_metrics("the fixed certificate", |m| {
        m.sum("edge_proxy_config_last_reload_successful", &[]) == 1.0
    });
    assert!(h.subject("a.test").contains("v4"));
}

#[test]
fn a_configuration_naming_a_missing_certificate_stays_rejected() {
    let h = Https::start();
    let config = std::fs::read_to_string(&h.proxy.config_path).unwrap();
    let d = h.dir.path().display().to_string();
    h.proxy
        .rewrite_config(&config.replace(&format!("{d}/a.crt"), &format!("{d}/gone.crt")));
    h.proxy.wait_metrics("the rejected configuration", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]) >= 1.0
    });
    // Half a second later (and four polls later) it is still rejected.
    std::thread::sleep(Duration::from_secs(2));
    let m = h.proxy.metrics();
    assert_eq!(m.sum("edge_proxy_config_last_reload_successful", &[]), 0.0);
    let log = h.proxy.log();
    assert!(!log.contains("TLS certificates reloaded"), "{log}");
    assert!(
        h.subject("a.test").contains("v1"),
        "the running certificate stays"
    );
}

#[test]
fn a_missing_certificate_at_start_up_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        format!(
            "listen:\n  http: \"127.0.0.1:{}\"\n  https: \"127.0.0.1:{}\"\ndiscovery: static\ntls:\n  - hosts: [a.test]\n    cert: /nonexistent/tls.crt\n    key: /nonexistent/tls.key\nroutes:\n  - service: a\n    port: 80\nstatic:\n  a: [\"127.0.0.1:1\"]\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(edge_proxy_bin())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tls[0]") && stderr.contains("/nonexistent/tls.crt"),
        "{stderr}"
    );
}

#[test]
fn websocket_upgrades_are_proxied_over_tls() {
    let h = Https::start();
    // openssl s_client as a TLS pipe, offering only HTTP/1.1 (WebSocket over
    // HTTP/2, RFC 8441, is not something pingora 0.9 offers).
    let mut tls = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_quiet", "-alpn", "http/1.1"])
        .args(["-servername", "ws.b.test", "-connect"])
        .arg(format!("127.0.0.1:{}", h.port))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut to_proxy = tls.stdin.take().unwrap();
    let from_proxy = tls.stdout.take().unwrap();
    // Read on a thread, so that a silent proxy fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut from_proxy = from_proxy;
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_proxy.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut received = Vec::new();
    let mut read_until = |needle: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !received.windows(needle.len()).any(|w| w == needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => received.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "no {:?} in {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&received)
                ),
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    use std::io::Write;
    to_proxy
        .write_all(b"GET /chat HTTP/1.1\r\nHost: ws.b.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    let head = read_until(b"\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for frame in ["first frame over tls", "second frame over tls"] {
        to_proxy.write_all(frame.as_bytes()).unwrap();
        read_until(frame.as_bytes());
    }
    let _ = tls.kill();
    let _ = tls.wait();
}

#[test]
fn keep_alive_requests_over_tls_are_served_after_idle_gaps_without_waiting() {
    // An idle TLS keep-alive connection waits for the next TLS record before
    // any request state is allocated: each request after a gap must still be
    // answered at once. (Pipelined requests are not served by pingora, over
    // TLS or not, before or after this change: it answers the first and closes.)
    let https = Https::start();
    let script = format!(
        r#"
import socket, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="a.test")
s.settimeout(5)
answered, slowest = 0, 0.0
for gap in (0, 0.3, 1.0, 0.1):
    time.sleep(gap)
    start = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    got = b""
    while b"Hello world from app-1!" not in got or not got.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk: break
        got += chunk
    answered += b"Hello world from app-1!" in got
    slowest = max(slowest, time.monotonic() - start)
print(answered, round(slowest, 2))
"#,
        port = https.port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut fields = stdout.split_whitespace();
    assert_eq!(fields.next(), Some("4"), "{stdout} {stderr}");
    // A stall would wait out the 5 s socket timeout (or the idle timeout).
    let slowest: f64 = fields.next().unwrap().parse().unwrap();
    assert!(
        slowest < 3.0,
        "slowest request {slowest} s: {stdout} {stderr}"
    );
}
