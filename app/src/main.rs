//! hello-app: the tiny web service edge-proxy serves in examples, tests and benchmarks.
//!
//! `GET /` answers `Hello world from NAME! The time is TIME`, `GET /healthz` answers `ok`.
//! SIGTERM (or Ctrl-C) stops accepting, lets in-flight requests finish, and exits 0.
//! The shape follows hyper's `examples/hello.rs` and `examples/graceful_shutdown.rs`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// How long in-flight requests get after SIGTERM before the process exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

const USAGE: &str = "usage: hello-app [--listen ADDR]   (default 0.0.0.0:$PORT, PORT default 8080)
       hello-app --health          exit 0 if 127.0.0.1:$PORT/healthz answers 200 (a container HEALTHCHECK)";

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--health") {
        return health_check();
    }
    // Print errors on one line ourselves: anyhow's Debug output adds a backtrace when
    // RUST_BACKTRACE is set, which is noise for a usage error.
    let result = listen_addr().and_then(|addr| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?
            .block_on(serve(addr))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello-app: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let name: Arc<str> = pod_name().into();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // The handler is installed before the line that says we listen: a
    // SIGTERM sent right after it must drain, not kill (the default action).
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    eprintln!("hello-app {name} listening on {}", listener.local_addr()?);

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal(term));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let name = name.clone();
                let service = service_fn(move |req| respond(req, name.clone()));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // A client that goes away mid-request is not our error.
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }

    // Stop accepting (the listener is dropped here), then drain.
    drop(listener);
    eprintln!("hello-app {name}: draining");
    tokio::select! {
        _ = graceful.shutdown() => eprintln!("hello-app {name}: drained, exiting"),
        _ = tokio::time::sleep(DRAIN_DEADLINE) => eprintln!("hello-app {name}: drain deadline passed, exiting"),
    }
    Ok(())
}

async fn respond(
    req: Request<Incoming>,
    name: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, "ok\n".to_string()),
        // Every other path greets too, so that routes with any path can point here.
        (&Method::GET | &Method::HEAD, _) => {
            let now = humantime::format_rfc3339_seconds(SystemTime::now());
            (
                StatusCode::OK,
                format!("Hello world from {name}! The time is {now}\n"),
            )
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

fn listen_addr() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => {
            let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
            let port: u16 = port
                .parse()
                .with_context(|| format!("PORT={port:?} is not valid: expected a port number"))?;
            Ok(SocketAddr::from(([0, 0, 0, 0], port)))
        }
        (Some("--listen"), Some(addr), None) => addr
            .parse()
            .with_context(|| format!("--listen={addr:?} is not valid: expected IP:PORT")),
        (Some("-h" | "--help"), _, _) => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        _ => bail!("{USAGE}"),
    }
}

/// `$POD_NAME` (set from the downward API in Kubernetes), else the hostname.
fn pod_name() -> String {
    let non_empty = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    std::env::var("POD_NAME")
        .ok()
        .and_then(non_empty)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(non_empty)
        })
        .or_else(|| std::env::var("HOSTNAME").ok().and_then(non_empty))
        .unwrap_or_else(|| "unknown".into())
}

/// The image has no shell and no curl: the binary asks its own `/healthz`.
fn health_check() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ask = || -> std::io::Result<String> {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        // The status line is all we need; a server may keep the connection open.
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 512 {
            match conn.read(&mut buf)? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    match ask() {
        Ok(head) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => {
            std::process::ExitCode::SUCCESS
        }
        Ok(head) => {
            eprintln!(
                "hello-app: {addr}/healthz: {}",
                head.lines().next().unwrap_or("")
            );
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hello-app: {addr}/healthz: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
