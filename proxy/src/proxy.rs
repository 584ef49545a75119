//! The request path: one `ProxyHttp` implementation, one short method per phase.
//!
//! - `request_filter`: find the route (404 if none) and read the affinity cookie;
//! - `upstream_peer`: choose the endpoint (pinned, or a new ready one);
//! - `fail_to_connect`: try another endpoint when a connection is refused;
//! - `upstream_request_filter`: forwarding headers;
//! - `response_filter`: set the affinity cookie when the session was (re)pinned;
//! - `logging`: the outcome of the request.

use crate::affinity::{self, EndpointId};
use crate::routing::normalize_host;
use crate::state::{RouteEntry, SharedSnapshot};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{COOKIE, HOST, SET_COOKIE};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct EdgeProxy {
    snapshot: SharedSnapshot,
}

impl EdgeProxy {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        EdgeProxy { snapshot }
    }
}

/// What affinity did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AffinityOutcome {
    /// Not an affinity route.
    #[default]
    None,
    /// No cookie: a new session was pinned.
    New,
    /// The cookie's endpoint served the request.
    Pinned,
    /// The cookie's endpoint is gone, not serving or refused: pinned anew.
    Repinned,
    /// The cookie's value was not one we issue (tampered, garbage): pinned anew.
    Rejected,
}

impl AffinityOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityOutcome::None => "none",
            AffinityOutcome::New => "new",
            AffinityOutcome::Pinned => "pinned",
            AffinityOutcome::Repinned => "repinned",
            AffinityOutcome::Rejected => "rejected",
        }
    }
}

/// Per-request state, shared by the phases.
#[derive(Default)]
pub struct RequestCtx {
    route: Option<Arc<RouteEntry>>,
    timeouts: crate::config::Timeouts,
    retries: usize,
    /// The endpoint id the client's cookie names, when it decoded.
    cookie_id: Option<EndpointId>,
    cookie_rejected: bool,
    pub affinity: AffinityOutcome,
    /// Endpoints tried, in order; the last one is the current one.
    tried: Vec<SocketAddr>,
}

impl RequestCtx {
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.tried.last().copied()
    }
}

/// The host a request is for: an absolute-form target's authority wins over the
/// Host header (RFC 9112 section 3.2.2). `None`: the target is ambiguous.
fn request_host(req: &RequestHeader) -> Option<&[u8]> {
    match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute { authority, .. } => Some(authority),
        RawTargetAuthority::AmbiguousAuthority => None,
        RawTargetAuthority::None => Some(req.headers.get(HOST).map_or(&b""[..], |v| v.as_bytes())),
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.snapshot.load();
        let req = session.req_header();
        let Some(host) = request_host(req) else {
            session
                .respond_error_with_body(400, Bytes::from_static(b"ambiguous request target\n"))
                .await?;
            return Ok(true);
        };
        let host = normalize_host(std::str::from_utf8(host).unwrap_or(""));
        let Some(route) = snapshot.router.find(&host, req.uri.path()).cloned() else {
            session
                .respond_error_with_body(
                    404,
                    Bytes::from_static(b"no route for this host and path\n"),
                )
                .await?;
            return Ok(true);
        };
        if let Some(affinity) = &route.affinity {
            let value = req
                .headers
                .get_all(COOKIE)
                .iter()
                .find_map(|h| affinity::find_cookie(h.as_bytes(), &affinity.cookie));
            if let Some(value) = value {
                ctx.cookie_id = affinity::decode(value);
                ctx.cookie_rejected = ctx.cookie_id.is_none();
            }
        }
        ctx.timeouts = snapshot.timeouts;
        ctx.retries = snapshot.retries;
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx.route.clone().ok_or_else(|| Error::new(InternalError))?;
        let upstream = &route.upstream;
        let pinned = ctx
            .cookie_id
            .and_then(|id| upstream.pinned(id))
            .filter(|addr| !ctx.tried.contains(addr));
        let endpoint = match pinned {
            Some(addr) => {
                ctx.affinity = AffinityOutcome::Pinned;
                Some(addr)
            }
            None => {
                if route.affinity.is_some() {
                    ctx.affinity = if ctx.cookie_rejected {
                        AffinityOutcome::Rejected
                    } else if ctx.cookie_id.is_some() {
                        AffinityOutcome::Repinned
                    } else {
                        AffinityOutcome::New
                    };
                }
                upstream.pick(&ctx.tried)
            }
        };
        let Some(addr) = endpoint else {
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            return Error::e_explain(
                HTTPStatus(status),
                format!("no ready endpoint left for {}", upstream.key),
            );
        };
        ctx.tried.push(addr);

        let mut peer = HttpPeer::new(addr, false, String::new());
        let t = &ctx.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer.options.tcp_keepalive = Some(pingora::protocols::TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            count: 3,
            #[cfg(target_os = "linux")]
            user_timeout: Duration::ZERO,
        });
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet: another endpoint can serve the request.
        if ctx.tried.len() <= ctx.retries {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Absolute-form target: the authority is the host (RFC 9112 3.2.2);
        // forward it as Host with an origin-form target, as a server expects.
        if let RawTargetAuthority::Absolute { authority, .. } =
            raw_target_authority(upstream_request.raw_path())
        {
            let host = http::HeaderValue::from_bytes(authority)
                .or_err(InvalidHTTPHeader, "request authority")?;
            let origin_form = upstream_request.uri.clone();
            upstream_request.insert_header(HOST, host)?;
            upstream_request.set_uri(origin_form);
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip().to_string();
            let xff = match upstream_request.headers.get("x-forwarded-for") {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip,
            };
            upstream_request.insert_header("x-forwarded-for", xff)?;
        }
        let proto = if is_tls(session) { "https" } else { "http" };
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        if let Some(host) = upstream_request.headers.get(HOST).cloned() {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        let (Some(affinity), Some(addr)) = (&route.affinity, ctx.endpoint()) else {
            return Ok(());
        };
        if ctx.affinity != AffinityOutcome::Pinned {
            let id = route.upstream.endpoint_id(&addr);
            let cookie = affinity::set_cookie(affinity, id, is_tls(session));
            upstream_response.append_header(SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        match e {
            Some(e) => {
                tracing::warn!(status, route, endpoint = ?ctx.endpoint(), affinity = ctx.affinity.as_str(), "request failed: {e}")
            }
            None => {
                tracing::debug!(status, route, endpoint = ?ctx.endpoint(), affinity = ctx.affinity.as_str(), "request")
            }
        }
    }
}
