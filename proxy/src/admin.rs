//! The admin listener: `/healthz` (the process serves), `/readyz` (a
//! configuration is loaded and its endpoints are discovered).

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

    fn ready(&self) -> bool {
        // Every upstream has been discovered at least once when its snapshot is
        // built; an upstream with no endpoints at all is still "ready" as a
        // proxy (it answers 503), so readiness is simply "a snapshot is loaded".
        !self.snapshot.load().upstreams.is_empty()
    }
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", body.len())
        .body(body.as_bytes().to_vec())
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
