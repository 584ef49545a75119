//! The admin listener: `/healthz` (the process serves), `/readyz` (a
//! configuration is loaded and discovery has its endpoint lists), `/metrics`.

use crate::metrics::{self, METRICS};
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Admin {
    snapshot: SharedSnapshot,
}

impl Admin {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Admin { snapshot }
    }

    /// Ready when every upstream's discovery has its first complete list (an
    /// upstream with no endpoints is still "ready" as a proxy: it answers 503);
    /// else the upstreams still waiting.
    fn unsynced(&self) -> Vec<String> {
        let snapshot = self.snapshot.load();
        snapshot
            .waiting_for
            .iter()
            .map(|source| source.describe().to_string())
            .chain(
                snapshot
                    .upstreams
                    .iter()
                    .filter(|(_, (_, u))| !u.is_synced())
                    .map(|(key, _)| key.to_string()),
            )
            .collect()
    }

    /// Gauges that describe the current snapshot are set at scrape time.
    fn update_gauges(&self) {
        let snapshot = self.snapshot.load();
        METRICS.endpoints.reset();
        METRICS.discovery_synced.reset();
        for (key, (_, upstream)) in &snapshot.upstreams {
            let service = key.to_string();
            let (ready, serving_terminating) = upstream.endpoint_counts();
            METRICS
                .endpoints
                .with_label_values(&[&service, "ready"])
                .set(ready as i64);
            METRICS
                .endpoints
                .with_label_values(&[&service, "serving_terminating"])
                .set(serving_terminating as i64);
            METRICS
                .discovery_synced
                .with_label_values(&[&service])
                .set(i64::from(upstream.is_synced()));
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.unsynced() {
                waiting if waiting.is_empty() => text(StatusCode::OK, "ready\n"),
                waiting => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "not ready: no endpoint list yet for {}\n",
                        waiting.join(", ")
                    ),
                ),
            },
            "/metrics" => {
                self.update_gauges();
                let (content_type, body) = metrics::render();
                respond(StatusCode::OK, &content_type, body)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// `edge-proxy health`: asks the admin listener's `/readyz`, as a container
/// HEALTHCHECK does without a shell or curl in the image. Ok only on 200.
pub fn probe_ready(admin: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::time::Duration;
    // A wildcard listener is asked on loopback.
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, admin.port());
    let ask = || -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
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
    let head = ask().map_err(|e| format!("http://{addr}/readyz: {e}"))?;
    let status = head.lines().next().unwrap_or_default();
    match status.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("http://{addr}/readyz: {status}")),
    }
}
