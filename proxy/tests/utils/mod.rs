//! Shared test utilities: real processes on 127.0.0.1 and real clients.
//!
//! - [`HelloApp`]: a hello-app process on a free port, killed on drop;
//! - [`Proxy`]: an edge-proxy process on a config written to a temp dir;
//! - [`EchoOrigin`]: a tiny origin that answers with the request head it got;
//! - [`curl`]: runs the real curl and parses status, headers and body;
//! - [`raw_request`]: bytes on a socket, for requests curl refuses to send.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod kube_api;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to start answering before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(20);

pub fn edge_proxy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edge-proxy"))
}

/// hello-app is built by `cargo test --workspace` (its own tests need it) into
/// the same directory as edge-proxy.
pub fn hello_app_bin() -> PathBuf {
    let bin = edge_proxy_bin().with_file_name("hello-app");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hello-app` (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A port that was free a moment ago. The kernel hands out ephemeral ports in
/// sequence, so a reuse race within one test run is unlikely.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll until a TCP connect to `addr` succeeds.
pub fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let start = Instant::now();
    while start.elapsed() < START_DEADLINE {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited early with {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on {addr} within {START_DEADLINE:?}");
}

/// The address in a child's first stderr line, "... listening on ADDR"; the
/// rest of its stderr is drained on a thread so that it never blocks.
pub fn listening_addr(child: &mut Child, what: &str) -> SocketAddr {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .rsplit_once("listening on ")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no address in its first line {line:?}"));
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    addr
}

/// Send a signal with the system's `kill` (no unsafe code in tests either).
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// Wait for a child to exit, at most `deadline`; kill it if it does not.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub struct HelloApp {
    pub name: String,
    pub addr: SocketAddr,
    pub child: Child,
}

impl HelloApp {
    /// Start on a port the kernel picks (no race with other tests for a
    /// "free" port); the address is read from hello-app's first log line.
    pub fn start(name: &str) -> HelloApp {
        let mut child = Command::new(hello_app_bin())
            .args(["--listen", "127.0.0.1:0"])
            .env("POD_NAME", name)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hello-app");
        let addr = listening_addr(&mut child, name);
        HelloApp {
            name: name.to_string(),
            addr,
            child,
        }
    }

    pub fn start_on(name: &str, addr: SocketAddr) -> HelloApp {
        let mut child = Command::new(hello_app_bin())
            .args(["--listen", &addr.to_string()])
            .env("POD_NAME", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hello-app");
        wait_listening(addr, &mut child, name);
        HelloApp {
            name: name.to_string(),
            addr,
            child,
        }
    }

    /// Stop it hard: connections to its port are refused from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HelloApp {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Proxy {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub child: Child,
    /// stderr: lifecycle and error logs.
    pub log_path: PathBuf,
    /// stdout: the access log.
    pub access_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Start edge-proxy on `config`, a YAML document in which `{http}` and
    /// `{admin}` stand for the listen addresses this function picks.
    pub fn start(config: &str) -> Proxy {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_on(config, http)
    }

    pub fn start_on(config: &str, http: SocketAddr) -> Proxy {
        Self::start_with_env(config, http, &[])
    }

    pub fn start_with_env(config: &str, http: SocketAddr, env: &[(&str, &Path)]) -> Proxy {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = tempfile::tempdir().unwrap();
        // Laid out as the kubelet lays out a ConfigMap volume.
        let config_path = dir.path().join("proxy.yaml");
        let text = config
            .replace("{http}", &http.to_string())
            .replace("{admin}", &admin.to_string());
        kubelet_write(dir.path(), &text);
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let access_path = dir.path().join("access.log");
        let access = std::fs::File::create(&access_path).unwrap();
        let mut child = Command::new(edge_proxy_bin())
            .arg("--config")
            .arg(&config_path)
            .env("EDGE_PROXY_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdout(access)
            .stderr(log)
            .spawn()
            .expect("spawn edge-proxy");
        wait_listening(http, &mut child, "edge-proxy");
        wait_listening(admin, &mut child, "edge-proxy admin");
        Proxy {
            http,
            admin,
            config_path,
            child,
            log_path,
            access_path,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The access log so far, one parsed JSON object per line.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Scrape /metrics and parse it with Prometheus' Python parser.
    pub fn metrics(&self) -> Metrics {
        let text = curl(&[&format!("http://{}/metrics", self.admin)]).body;
        let mut parser = Command::new("python3")
            .arg(repo_root().join("proxy/tests/tools/parse_metrics.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        parser
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = parser.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "metrics do not parse: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Metrics { samples }
    }

    /// Update the config the way the kubelet updates a ConfigMap volume: a new
    /// timestamped directory, then one rename of the `..data` symlink.
    pub fn rewrite_config(&self, config: &str) {
        kubelet_write(self.config_path.parent().unwrap(), &self.fill(config));
    }

    /// Edit the file in place, as a person with an editor would (through the
    /// symlinks, the file itself changes).
    pub fn edit_config_in_place(&self, config: &str) {
        std::fs::write(&self.config_path, self.fill(config)).unwrap();
    }

    fn fill(&self, config: &str) -> String {
        config
            .replace("{http}", &self.http.to_string())
            .replace("{admin}", &self.admin.to_string())
    }

    /// Wait until `/metrics` satisfies `cond`, at most 10 s.
    pub fn wait_metrics(&self, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if cond(&m) {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// edge-proxy with one route, `app.test` to `origin`; `extra` is appended at the
/// top level of the configuration (`limits:`, `trusted_proxies:`, ...).
pub fn proxy_to(origin: &EchoOrigin, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\nroutes:\n  - host: app.test\n    service: echo\n    port: 80\nstatic:\n  echo: [\"{}\"]\n{extra}",
        origin.addr
    ))
}

/// Poll `cond` until it holds, at most `limit`; how long that took.
pub fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Write `proxy.yaml` into `dir` as the kubelet's atomic writer does:
/// `proxy.yaml -> ..data/proxy.yaml`, `..data -> ..TIMESTAMP/`, where each update
/// creates a new `..TIMESTAMP` directory and renames a new `..data` symlink over
/// the old one, then removes the old directory.
pub fn kubelet_write(dir: &Path, text: &str) {
    // One implementation for these tests and scripts/zero-downtime.sh.
    let mut writer = Command::new("bash")
        .arg(repo_root().join("scripts/kubelet-write.sh"))
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("bash scripts/kubelet-write.sh");
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(writer.wait().unwrap().success(), "kubelet-write.sh failed");
}

/// A static-discovery config with one route per `(host, path, path_type)`, all to
/// `service` whose endpoints are `endpoints`.
pub fn static_config(routes: &str, endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\nroutes:\n{routes}\nstatic:\n  hello-app: [{}]\n",
        list.join(", ")
    )
}

/// Parsed samples of one /metrics scrape.
pub struct Metrics {
    pub samples: Vec<serde_json::Value>,
}

impl Metrics {
    /// The sum of the samples named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s["name"] == name)
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `name=value` of a Set-Cookie header for `cookie`, if any.
    pub fn set_cookie(&self, cookie: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .find(|v| v.starts_with(&format!("{cookie}=")))
    }

    /// The cookie value from Set-Cookie, e.g. `0123456789abcdef`.
    pub fn cookie_value(&self, cookie: &str) -> Option<String> {
        let sc = self.set_cookie(cookie)?;
        let pair = sc.split(';').next()?;
        Some(pair[cookie.len() + 1..].to_string())
    }

    /// Which hello-app answered: the NAME in "Hello world from NAME! ...".
    pub fn served_by(&self) -> &str {
        self.body
            .strip_prefix("Hello world from ")
            .and_then(|rest| rest.split('!').next())
            .unwrap_or_else(|| panic!("not a hello-app body: {:?}", self.body))
    }
}

/// Run curl with `args` and parse the (last) response head and the body.
pub fn curl(args: &[&str]) -> Response {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_response(&out.stdout)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Read one response from a kept-alive connection, to the end of its body
/// (by its Content-Length): the head and body as text. Panics if the
/// connection closes before.
pub fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

/// Write `request` on a fresh connection and read until the server closes or
/// 5 s pass.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// `count` GETs of `url` on one keep-alive connection from the local address
/// `from` (any of 127.0.0.0/8), by one curl: each one's status and `Retry-After`.
pub fn requests_from(from: &str, url: &str, count: usize, extra: &[&str]) -> Vec<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "--interface", from])
        .args(["-w", "\nSTATUS %{http_code} %header{retry-after}\n"])
        .args(extra)
        .args(std::iter::repeat_n(url, count))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("STATUS "))
        .map(|l| {
            let (code, retry) = l.split_once(' ').unwrap_or((l, ""));
            (code.parse().unwrap_or(0), retry.trim().to_string())
        })
        .collect()
}

/// Run `edge-proxy` with `args`.
pub fn edge_proxy(args: &[&str]) -> Output {
    Command::new(edge_proxy_bin()).args(args).output().unwrap()
}

/// A self-signed certificate for `name` in DIR/FILE.crt and DIR/FILE.key, valid
/// for 2 days (the monitoring test relies on that for the expiry alert).
pub fn make_cert(dir: &Path, file: &str, name: &str, org: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/O={org}/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-keyout",
            "new.key",
            "-out",
            "new.crt",
        ],
    );
    // Renamed into place, as a Secret update lands whole.
    std::fs::rename(dir.join("new.key"), dir.join(format!("{file}.key"))).unwrap();
    std::fs::rename(dir.join("new.crt"), dir.join(format!("{file}.crt"))).unwrap();
}

/// `openssl` with these arguments, run in `dir`, or the test fails with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file's bytes in base64, as a Secret's `data` holds them.
pub fn base64_file(path: &Path) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// An origin that answers every request with `200`, an `x-origin: NAME` header
/// and the request head it received as the body, so tests see which origin
/// served and exactly what the proxy forwarded.
pub struct EchoOrigin {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Every request head (and body, when it has a Content-Length) received.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EchoOrigin {
    pub fn start(name: &'static str) -> EchoOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || echo_connection(stream, name, log));
            }
        });
        EchoOrigin {
            name,
            addr,
            received,
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// Open a WebSocket-style upgrade through the proxy at `addr`; panics unless
/// the answer is `101`. The stream is then a raw tunnel to the origin.
pub fn websocket_upgrade(addr: SocketAddr, host: &str) -> TcpStream {
    let mut ws = TcpStream::connect(addr).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        ws,
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(ws.read(&mut byte).unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws
}

/// Send `msg` into an upgraded tunnel to an [`EchoOrigin`] and read it back.
pub fn echo_round_trip(ws: &mut TcpStream, msg: &[u8]) {
    ws.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    ws.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("tunnel closed before {msg:?} came back: {e}"));
    assert_eq!(got, msg);
}

/// A chunked body, de-chunked; `None` when it is malformed or cut short.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim_end().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One request head (its lines up to the blank one, which is left out);
/// `None` when the connection ends or fails first.
pub fn read_request_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" => return Some(head),
            Ok(_) => head.push_str(&line),
        }
    }
}

fn echo_connection(
    stream: TcpStream,
    name: &str,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some(head) = read_request_head(&mut reader) else {
            return;
        };
        // A body with a Content-Length (what the proxy forwards here) is read and recorded.
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            match read_chunked(&mut reader) {
                Some(b) => body = b,
                None => return,
            }
        }
        log.lock()
            .unwrap()
            .push(format!("{head}\r\n{}", String::from_utf8_lossy(&body)));
        // `/slow...`: answer after a second, to have a request in flight.
        if head.starts_with("GET /slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        // `?delay=1s` / `?delay=500ms`: answer that late (as Gateway API's
        // conformance echo server does).
        let target = head.split(' ').nth(1).unwrap_or("");
        if let Some(delay) = target
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("delay="))
        {
            let ms = match delay.strip_suffix("ms") {
                Some(n) => n.parse::<u64>().ok(),
                None => delay
                    .strip_suffix('s')
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|s| s * 1000),
            };
            std::thread::sleep(Duration::from_millis(ms.unwrap_or(0).min(10_000)));
        }
        // An upgrade (e.g. WebSocket): switch protocols, then echo raw bytes.
        if head.to_ascii_lowercase().contains("upgrade: websocket") {
            let _ = writer.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n");
            let _ = writer.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        // The status: an `x-code` header's (as ingress-nginx's error-page
        // backends answer), `/status/NNN`'s (the head as body) or
        // `/bare/NNN`'s (no body); else 200.
        let lower = head.to_ascii_lowercase();
        let code_of = |prefix: &str| {
            lower
                .split(prefix)
                .nth(1)
                .and_then(|rest| rest.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
        };
        let bare = lower.starts_with("get /bare/") || lower.starts_with("head /bare/");
        let status = code_of("\r\nx-code: ")
            .or_else(|| code_of(" /status/"))
            .or_else(|| code_of(" /bare/"))
            .unwrap_or(200);
        // `/big/N`: N KiB of body, to see response bandwidth.
        let big = lower
            .strip_prefix("get /big/")
            .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .map(|kib| "x".repeat(kib * 1024));
        let body = match &big {
            Some(big) => big.as_str(),
            None if bare => "",
            None => head.as_str(),
        };
        // `x-echo-set-header: Name:value,Name2:value2`: response headers to
        // send (as Gateway API's conformance echo server takes them).
        let extra: String = head
            .lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("x-echo-set-header").then_some(v)
            })
            .flat_map(|v| v.split(','))
            .filter_map(|pair| pair.split_once(':'))
            .map(|(n, v)| format!("{}: {}\r\n", n.trim(), v.trim()))
            .collect();
        // Requests in these tests carry no body.
        let response = format!(
            "HTTP/1.1 {status} Echo\r\nx-origin: {name}\r\n{extra}content-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            if lower.starts_with("head ") { "" } else { body }
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// README's ```yaml blocks that contain `needle`, each without the common
/// indentation it has inside a list item.
pub fn readme_yaml_blocks(needle: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains(needle))
        .map(|block| {
            let indent = block
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            block
                .lines()
                .map(|l| l.get(indent..).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}
