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

    /// Ready when every upstream's discovery has its first complete list. An
    /// upstream with no endpoints is still "ready" as a proxy: it answers 503.
    fn ready(&self) -> bool {
        self.snapshot
            .load()
            .upstreams
            .values()
            .all(|(_, u)| u.is_synced())
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
                .set(1);
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
            "/readyz" if self.ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => {
                self.update_gauges();
                let (content_type, body) = metrics::render();
                respond(StatusCode::OK, &content_type, body)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
