//! Idle upstream connections (third_party/pingora-core's task-less pool): kept
//! and reused request after request, checked when taken, so an upstream that
//! closed one costs no request, and closed by the proxy when the route's idle
//! timeout passes or the upstream closed them, without waiting for traffic;
//! kept per worker; and an upstream request whose client left is not waited
//! for.

mod utils;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utils::*;

/// An HTTP/1.1 upstream on 127.0.0.1 that answers every GET with the number of
/// the connection it came on, and records what happened to its connections.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// When the proxy closed a connection (the upstream read end of file).
    closed_by_proxy: Arc<Mutex<Vec<Instant>>>,
}

impl Upstream {
    /// `close_after`: the upstream closes each connection that long after its
    /// first response, as a server with a short keep-alive timeout does,
    /// without saying so in the response.
    fn start(close_after: Option<Duration>) -> Upstream {
        Self::start_slow(close_after, Duration::ZERO)
    }

    /// The same, each response sent `delay` after its request arrived.
    fn start_slow(close_after: Option<Duration>, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(Mutex::new(Vec::new()));
        let (count, closed) = (accepted.clone(), closed_by_proxy.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let id = count.fetch_add(1, Ordering::SeqCst) + 1;
                let closed = closed.clone();
                std::thread::spawn(move || serve(conn, id, close_after, delay, &closed));
            }
        });
        Upstream {
            addr,
            accepted,
            closed_by_proxy,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(
    mut conn: TcpStream,
    id: usize,
    close_after: Option<Duration>,
    delay: Duration,
    closed: &Mutex<Vec<Instant>>,
) {
    // Bounded: nothing here waits longer than the test does.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => {
                closed.lock().unwrap().push(Instant::now());
                return;
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            std::thread::sleep(delay);
            let body = id.to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(response.as_bytes()).is_err() {
                return;
            }
            if let Some(after) = close_after {
                std::thread::sleep(after);
                return; // dropped: closed
            }
        }
    }
}

fn proxy_to(upstream: &Upstream, extra: &str) -> Proxy {
    let config = static_config(
        "  - host: app.test\n    service: hello-app\n    port: 8080\n",
        &[upstream.addr],
    );
    Proxy::start(&format!("{config}{extra}"))
}

/// A keep-alive client: one GET on `s`, the body (the upstream connection's number).
fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let text = read_response(s);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    body.to_string()
}

fn client(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Which end of a connection a port is matched on.
enum End {
    /// Ours: the upstream's side of a connection to it.
    Local,
    /// The far end: the proxy's side of a connection to the upstream.
    Remote,
}

/// Sockets of this machine in CLOSE_WAIT (closed by the far end, not yet by
/// ours; /proc/net/tcp, state 08) whose `end` is on `port`.
fn close_wait(end: End, port: u16) -> usize {
    let column = match end {
        End::Local => 1,
        End::Remote => 2,
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let end_port = fields[column].rsplit(':').next().unwrap();
            u16::from_str_radix(end_port, 16) == Ok(port) && fields[3] == "08"
        })
        .count()
}

#[test]
fn a_client_that_leaves_ends_its_upstream_request() {
    // The upstream takes 2 s to answer; the client gives up after 300 ms. The
    // proxy watches the client while it waits (a GET has no body to read, so
    // this is its own watch, third_party/pingora-proxy's bodiless path) and
    // closes the upstream connection then, instead of after the answer.
    let upstream = Upstream::start_slow(None, Duration::from_secs(2));
    let proxy = proxy_to(&upstream, "");
    let mut s = client(&proxy);
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    eventually(
        "the upstream has the request",
        Duration::from_secs(5),
        || upstream.accepted() == 1,
    );
    std::thread::sleep(Duration::from_millis(300));
    let left = Instant::now();
    drop(s);
    eventually(
        "the proxy closes the upstream connection",
        Duration::from_secs(5),
        || close_wait(End::Local, upstream.addr.port()) == 1,
    );
    assert!(
        left.elapsed() < Duration::from_millis(1500),
        "{:?}",
        left.elapsed()
    );
    // The proxy serves the next client on a new connection.
    let mut s = client(&proxy);
    assert_eq!(get(&mut s), "2");
}

#[test]
fn one_upstream_connection_serves_request_after_request() {
    let upstream = Upstream::start(None);
    // One worker: one pool for every client (with more, each has its own,
    // as the next test shows).
    let proxy = proxy_to(&upstream, "threads: 1\n");
    let mut a = client(&proxy);
    let first = get(&mut a);
    for _ in 0..30 {
        assert_eq!(get(&mut a), first);
    }
    // Another client, after the first: the same pooled connection. (The
    // proxy releases it just after the last byte of the response: a request
    // arriving in that instant would rightly open another.)
    std::thread::sleep(Duration::from_millis(100));
    let mut b = client(&proxy);
    assert_eq!(get(&mut b), first);
    assert_eq!(upstream.accepted(), 1);
}

#[test]
fn two_workers_take_client_connections_in_turn_each_with_its_own_upstream_connections() {
    // Each worker runs its own event loop (no work stealing): accepted
    // connections are dealt to them in turn, and a worker reuses only the
    // upstream connections it opened, which its event loop watches.
    let upstream = Upstream::start(None);
    let proxy = proxy_to(&upstream, "threads: 2\n");
    // Opened one after another, each answered before the next is opened.
    let mut clients: Vec<TcpStream> = Vec::new();
    let mut first = Vec::new();
    for _ in 0..4 {
        let mut c = client(&proxy);
        first.push(get(&mut c));
        clients.push(c);
    }
    // Requests one at a time: a worker never needs a second connection.
    for _ in 0..10 {
        for (c, want) in clients.iter_mut().zip(&first) {
            assert_eq!(&get(c), want);
        }
    }
    assert_eq!(upstream.accepted(), 2, "one upstream connection per worker");
    assert_ne!(
        first[0], first[1],
        "the second client went to the other worker"
    );
    assert_eq!(first[0], first[2]);
    assert_eq!(first[1], first[3]);
}

#[test]
fn an_upstream_that_closed_its_idle_connection_costs_no_request() {
    let upstream = Upstream::start(Some(Duration::from_millis(20)));
    let proxy = proxy_to(&upstream, "");
    let mut s = client(&proxy);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..15 {
        // Each pooled connection is closed by the upstream before the next
        // request takes it: the proxy sees that and opens a new one.
        seen.insert(get(&mut s));
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(seen.len(), 15, "a closed connection was used: {seen:?}");
    assert_eq!(upstream.accepted(), 15);
    let errors: Vec<_> = proxy
        .access_log()
        .into_iter()
        .filter(|l| l["status"] != 200)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn idle_upstream_connections_close_after_the_route_idle_timeout() {
    let upstream = Upstream::start(None);
    let proxy = proxy_to(&upstream, "timeouts: { idle: 1s }\n");
    let mut s = client(&proxy);
    get(&mut s);
    let idle_from = Instant::now();
    eventually(
        "the proxy closes its idle connection",
        Duration::from_secs(5),
        || !upstream.closed_by_proxy.lock().unwrap().is_empty(),
    );
    let closed = upstream.closed_by_proxy.lock().unwrap()[0] - idle_from;
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(3000),
        "closed after {closed:?}"
    );
    // The next request opens a new one.
    assert_eq!(get(&mut s), "2");
}

#[test]
fn connections_the_upstream_closed_are_closed_without_waiting_for_traffic() {
    // Answers after 300 ms: the ten requests below are in flight together, so
    // each has a connection of its own and none is reused while the upstream
    // closes it (that race is a real upstream's too; not what this tests).
    let upstream =
        Upstream::start_slow(Some(Duration::from_millis(20)), Duration::from_millis(300));
    let proxy = proxy_to(&upstream, "");
    // Ten connections in the pool at once: ten clients in flight together.
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let mut s = client(&proxy);
            std::thread::spawn(move || {
                get(&mut s);
                s
            })
        })
        .collect();
    let _open: Vec<TcpStream> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200)); // the upstream has closed them
                                                    // The upstream closes them all; nothing else is sent. The proxy closes its
                                                    // ends within its sweep (every second), not at the next request.
    eventually(
        "no CLOSE_WAIT towards the upstream",
        Duration::from_secs(5),
        || close_wait(End::Remote, upstream.addr.port()) == 0,
    );
    assert!(upstream.accepted() >= 1);
}

#[test]
fn a_fast_upstream_waits_for_a_slow_client() {
    // The upstream can send a 128 MiB body at loopback speed; the client reads
    // 1 KiB, then nothing for two seconds. The proxy reads from the upstream
    // only as fast as it can write to the client (a few MiB of socket buffers
    // in between), instead of holding the body in memory; then the whole body
    // arrives.
    const BODY: usize = 128 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_by_upstream = sent.clone();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        if read_request_head(&mut std::io::BufReader::new(&conn)).is_none() {
            return;
        }
        let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        conn.write_all(header.as_bytes()).unwrap();
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..BODY / chunk.len() {
            if conn.write_all(&chunk).is_err() {
                return;
            }
            sent_by_upstream.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    let upstream = Upstream {
        addr,
        accepted: Arc::new(AtomicUsize::new(0)),
        closed_by_proxy: Arc::new(Mutex::new(Vec::new())),
    };
    let proxy = proxy_to(&upstream, "");
    let mut s = client(&proxy);
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(2));
    let in_flight = sent.load(Ordering::SeqCst);
    assert!(
        in_flight < 48 << 20,
        "the upstream sent {} MiB to a client that read 1 KiB",
        in_flight >> 20
    );
    // Then the client reads on: every byte arrives.
    let head_end = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut received = first.len() - head_end;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < BODY && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert_eq!(received, BODY);
}
