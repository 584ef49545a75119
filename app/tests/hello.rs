//! hello-app as a process: the contract's body, /healthz, PORT, and the drain on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start hello-app on a port the kernel picks (tests pass port 0: no race
/// for a "free" port) and read the address from its first log line.
fn start(args: &[&str], envs: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello-app"))
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let bound: SocketAddr = line
        .trim_end()
        .rsplit_once("listening on ")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // 0.0.0.0 (the PORT default) is reached on loopback.
    (child, SocketAddr::from(([127, 0, 0, 1], bound.port())))
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn greets_with_pod_name_and_rfc3339_time() {
    let (mut app, addr) = start(&["--listen", "127.0.0.1:0"], &[("POD_NAME", "pod-7")]);
    let resp = get(addr, "/");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{resp}"
    );
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let time = body
        .strip_prefix("Hello world from pod-7! The time is ")
        .unwrap_or_else(|| panic!("{body:?}"))
        .trim_end();
    // RFC 3339 UTC: 2026-01-02T03:04:05Z
    assert_eq!(time.len(), 20, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");

    let health = get(addr, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );
    assert_eq!(stop(&mut app).code(), Some(0));
}

#[test]
fn port_variable_sets_the_port() {
    // PORT=0: the kernel picks; the log line says which, on 0.0.0.0.
    let (mut app, addr) = start(&[], &[("PORT", "0"), ("POD_NAME", "p")]);
    assert!(get(addr, "/").contains("Hello world from p!"));
    assert_eq!(stop(&mut app).code(), Some(0));
}

#[test]
fn bad_arguments_are_a_usage_error() {
    for args in [&["--listen", "nope"][..], &["--bogus"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_hello-app"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("hello-app: "), "{stderr}");
        assert!(!stderr.contains("panicked"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hello-app"))
        .env("PORT", "http")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT=\"http\""));
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_refuses_new_ones() {
    let (mut app, addr) = start(&["--listen", "127.0.0.1:0"], &[("POD_NAME", "d")]);
    // A request whose head is half sent: in flight when SIGTERM arrives.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    Command::new("kill")
        .args(["-TERM", &app.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused: the listener is closed.
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
    // The in-flight one completes.
    slow.write_all(b"\r\n").unwrap();
    let mut out = String::new();
    slow.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("Hello world from d!"), "{out}");
    assert_eq!(stop_wait(&mut app).code(), Some(0));
}

fn stop_wait(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_health_flag_asks_healthz_on_port_and_exits_zero_only_when_it_answers() {
    let (mut app, addr) = start(&[], &[("PORT", "0")]);
    // `--health` asks 127.0.0.1:$PORT: the port the app really took.
    let health = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_hello-app"))
            .arg("--health")
            .env("PORT", port.to_string())
            .output()
            .unwrap()
    };
    let up = health(addr.port());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stop(&mut app).success());
    let down = health(addr.port());
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("/healthz"));
}
