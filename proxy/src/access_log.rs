//! The access log: one line per request on stdout, JSON or text, written in
//! batches.
//!
//! Lines are formatted straight into a shared buffer (no per-field allocation,
//! no tracing event), and a writer thread empties it onto stdout at least
//! every [`FLUSH_INTERVAL`] and as soon as [`FLUSH_BYTES`] are waiting: one
//! `write` per batch instead of one per request, and a stdout that blocks
//! (a full pipe, a slow log shipper) stalls only the writer thread. While it
//! is stalled lines keep accumulating, up to [`MAX_PENDING_BYTES`]; beyond
//! that they are dropped and counted in `edge_proxy_access_log_dropped_total`
//! rather than growing memory without bound. [`flush`] runs at shutdown so no
//! buffered line is lost.
//!
//! Every JSON line stays valid whatever the client sent: strings go through
//! serde_json's escaping, and bytes that are not UTF-8 (in a path or a Host
//! header) become U+FFFD.

use crate::config::LogFormat;
use crate::metrics::METRICS;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A batch this large is written at once, without waiting for the interval.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// What may wait while stdout does not take it; later lines are dropped.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

struct AccessLog {
    format: LogFormat,
    pending: Mutex<Vec<u8>>,
    /// Wakes the writer thread early when a batch is full.
    full: Condvar,
    /// Held by whoever is writing to stdout, so batches keep their order.
    writing: Mutex<()>,
}

static LOG: OnceLock<AccessLog> = OnceLock::new();

/// Turn the access log on (once, at start-up) and start its writer thread.
pub fn init(format: Option<LogFormat>) {
    let Some(format) = format else { return };
    let log = LOG.get_or_init(|| AccessLog {
        format,
        pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2)),
        full: Condvar::new(),
        writing: Mutex::new(()),
    });
    let _ = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || loop {
            let pending = lock(&log.pending);
            let (pending, _) = log
                .full
                .wait_timeout_while(pending, FLUSH_INTERVAL, |p| p.len() < FLUSH_BYTES)
                .unwrap_or_else(|e| e.into_inner());
            drop(pending);
            write_pending(log);
        });
}

/// Whether requests are logged at all: with the log off nothing is formatted.
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// Write out whatever is buffered (at shutdown).
pub fn flush() {
    if let Some(log) = LOG.get() {
        write_pending(log);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_pending(log: &AccessLog) {
    let _writing = lock(&log.writing);
    let batch = std::mem::take(&mut *lock(&log.pending));
    if batch.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout cannot be helped; the request path never sees it.
    let _ = out.write_all(&batch).and_then(|()| out.flush());
    drop(out);
    // Keep the allocation for the next batch when nothing arrived meanwhile.
    let mut pending = lock(&log.pending);
    if pending.is_empty() && batch.capacity() <= FLUSH_BYTES * 4 {
        let mut batch = batch;
        batch.clear();
        *pending = batch;
    }
}

/// One request, as the access log records it.
pub struct Entry<'a> {
    pub client: Option<std::net::SocketAddr>,
    pub host: Option<&'a [u8]>,
    pub method: &'a str,
    pub path: &'a [u8],
    pub protocol: http::Version,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub duration: Duration,
    pub upstream: Option<std::net::SocketAddr>,
    pub route: &'a str,
    pub service: &'a str,
    pub affinity: &'a str,
    pub request_id: &'a str,
    pub error: Option<&'a dyn std::fmt::Display>,
}

/// Append one line for `entry`; never blocks on stdout.
pub fn record(entry: &Entry) {
    let Some(log) = LOG.get() else { return };
    let mut pending = lock(&log.pending);
    if pending.len() >= MAX_PENDING_BYTES {
        drop(pending);
        METRICS.access_log_dropped.inc();
        return;
    }
    let before = pending.len();
    match log.format {
        LogFormat::Json => json_line(&mut pending, entry),
        LogFormat::Text => text_line(&mut pending, entry),
    }
    // Wake the writer once per full batch, not per line.
    let full = before < FLUSH_BYTES && pending.len() >= FLUSH_BYTES;
    drop(pending);
    if full {
        log.full.notify_one();
    }
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "-",
    }
}

/// The bytes a JSON string holds as they are: printable ASCII but `"` and `\`
/// (one load per byte where three comparisons were).
const PLAIN_IN_JSON: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// A JSON string, escaped by serde_json; bytes that are not UTF-8 become U+FFFD.
/// Plain printable ASCII (route names, ids, most paths) is copied as it is.
fn json_str(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().all(|&b| PLAIN_IN_JSON[usize::from(b)]) {
        out.push(b'"');
        out.extend_from_slice(value);
        out.push(b'"');
        return;
    }
    let text = String::from_utf8_lossy(value);
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text.as_ref());
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` as exactly `width` digits, zero-padded (n < 10^width).
fn padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let digits = itoa::Buffer::new().format(n).len();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits)));
    number(out, n);
}

/// An IP address as text, without the fmt machinery for the common IPv4 case
/// (the access log's addresses, and `X-Forwarded-For` in forwarding.rs).
pub fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // Composed on the stack and copied once: a copy per octet cost more.
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            out.extend_from_slice(&text[..n]);
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// An address as `a.b.c.d:port` or `[v6]:port`.
fn socket_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            write_ip(out, std::net::IpAddr::V4(*a.ip()));
            out.push(b':');
            number(out, a.port());
        }
        std::net::SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// A duration in milliseconds with three decimals (`12.345`), rounded to the
/// microsecond.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    number(out, u64::try_from(micros / 1000).unwrap_or(u64::MAX));
    out.push(b'.');
    padded(out, (micros % 1000) as u32, 3);
}

/// Now as RFC 3339 UTC with microseconds, `2026-12-01T14:40:01.123456Z`. The
/// date and time up to the second are formatted once per second per thread.
fn timestamp(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            text.clear();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
            // "2026-12-01T14:40:01Z": keep all but the Z.
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
            text.pop();
        }
        out.extend_from_slice(text);
    });
    out.push(b'.');
    padded(out, now.subsec_micros(), 6);
    out.push(b'Z');
}

fn json_line(out: &mut Vec<u8>, e: &Entry) {
    let field = |out: &mut Vec<u8>, name: &str| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let addr = |out: &mut Vec<u8>, a: Option<std::net::SocketAddr>| match a {
        Some(a) => {
            out.push(b'"');
            socket_addr(out, a);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"\"-\""),
    };
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    field(out, "client");
    addr(out, e.client);
    field(out, "host");
    json_str(out, e.host.unwrap_or(b"-"));
    field(out, "method");
    json_str(out, e.method.as_bytes());
    field(out, "path");
    json_str(out, e.path);
    field(out, "protocol");
    json_str(out, protocol(e.protocol).as_bytes());
    field(out, "status");
    number(out, e.status);
    field(out, "bytes_in");
    number(out, e.bytes_in);
    field(out, "bytes_out");
    number(out, e.bytes_out);
    field(out, "duration_ms");
    millis(out, e.duration);
    field(out, "upstream");
    addr(out, e.upstream);
    field(out, "route");
    json_str(out, e.route.as_bytes());
    field(out, "service");
    json_str(out, e.service.as_bytes());
    field(out, "affinity");
    json_str(out, e.affinity.as_bytes());
    field(out, "request_id");
    json_str(out, e.request_id.as_bytes());
    if let Some(error) = e.error {
        field(out, "error");
        json_str(out, error.to_string().as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// `key=value` pairs after the time, as tracing's text format wrote them;
/// values with spaces, quotes or control characters are quoted and escaped.
fn text_line(out: &mut Vec<u8>, e: &Entry) {
    timestamp(out);
    out.extend_from_slice(b"  INFO request");
    let pair = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        let plain = !value.is_empty()
            && value
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if plain {
            out.extend_from_slice(value);
        } else {
            json_str(out, value);
        }
    };
    let client = e.client.map(|a| a.to_string());
    let upstream = e.upstream.map(|a| a.to_string());
    pair(out, "client", client.as_deref().unwrap_or("-").as_bytes());
    pair(out, "host", e.host.unwrap_or(b"-"));
    pair(out, "method", e.method.as_bytes());
    pair(out, "path", e.path);
    pair(out, "protocol", protocol(e.protocol).as_bytes());
    pair(out, "status", e.status.to_string().as_bytes());
    pair(out, "bytes_in", e.bytes_in.to_string().as_bytes());
    pair(out, "bytes_out", e.bytes_out.to_string().as_bytes());
    let ms = format!("{:.3}", e.duration.as_secs_f64() * 1000.0);
    pair(out, "duration_ms", ms.as_bytes());
    pair(
        out,
        "upstream",
        upstream.as_deref().unwrap_or("-").as_bytes(),
    );
    pair(out, "route", e.route.as_bytes());
    pair(out, "service", e.service.as_bytes());
    pair(out, "affinity", e.affinity.as_bytes());
    pair(out, "request_id", e.request_id.as_bytes());
    if let Some(error) = e.error {
        pair(out, "error", error.to_string().as_bytes());
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a [u8], host: &'a [u8], id: &'a str) -> Entry<'a> {
        Entry {
            client: Some("127.0.0.1:5000".parse().unwrap()),
            host: Some(host),
            method: "GET",
            path,
            protocol: http::Version::HTTP_11,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            upstream: None,
            route: "routes[0]",
            service: "default/hello-app:8080",
            affinity: "none",
            request_id: id,
            error: None,
        }
    }

    #[test]
    fn json_lines_stay_valid_for_hostile_values() {
        let hostile: [&[u8]; 5] = [
            b"/plain",
            b"/quote\"and\\backslash",
            b"/control\x01\x1b[31m\t\r\n",
            b"/not-utf8-\xff\xfe\xc3",
            "/ünïcödé/✓".as_bytes(),
        ];
        for path in hostile {
            let mut out = Vec::new();
            json_line(&mut out, &entry(path, b"h\"ost\x00", "id\"1"));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let line: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            assert_eq!(
                line["path"].as_str().unwrap(),
                String::from_utf8_lossy(path)
            );
            assert_eq!(line["host"], "h\"ost\u{0}");
            assert_eq!(line["request_id"], "id\"1");
            assert_eq!(line["status"], 200);
            assert_eq!(line["duration_ms"], 1.5);
            assert_eq!(line["upstream"], "-");
            assert_eq!(line["client"], "127.0.0.1:5000");
        }
    }

    #[test]
    fn text_lines_quote_what_would_split_them() {
        let mut out = Vec::new();
        text_line(&mut out, &entry(b"/a b\n\"c\"", b"example.com", "r1"));
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains(r#" path="/a b\n\"c\"" "#), "{line}");
        assert!(line.contains(" host=example.com "), "{line}");
        assert!(line.ends_with(" request_id=r1\n"), "{line}");
    }

    #[test]
    fn numbers_addresses_durations_and_timestamps_are_formatted_as_before() {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        for (d, expected) in [
            (Duration::ZERO, "0.000"),
            (Duration::from_nanos(12_345_499), "12.345"),
            (Duration::from_nanos(12_345_500), "12.346"),
            (Duration::from_secs(61), "61000.000"),
        ] {
            assert_eq!(text(&|o| millis(o, d)), expected);
            assert_eq!(expected, format!("{:.3}", d.as_secs_f64() * 1000.0));
        }
        for a in [
            "10.1.2.3:8080",
            "0.0.0.0:0",
            "255.100.99.9:65535",
            "192.168.10.200:1",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:80",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(text(&|o| socket_addr(o, addr)), addr.to_string());
        }
        // The same shape as humantime's RFC 3339 with microseconds, twice in a
        // second (the cached part) and across seconds.
        for _ in 0..3 {
            let ours = text(&|o| timestamp(o));
            let theirs = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
            assert_eq!(ours[..10], theirs[..10]);
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            humantime::parse_rfc3339(&ours).unwrap();
            std::thread::sleep(Duration::from_millis(600));
        }
    }
}
