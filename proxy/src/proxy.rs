//! The request path: one `ProxyHttp` implementation, one short method per phase.
//!
//! - `request_filter`: request id, route (404 if none), the route's request
//!   policies in order (policy.rs), affinity cookie;
//! - `upstream_peer`: choose the backend (the cookie's, else by weight), then
//!   the endpoint (pinned, or a new ready one);
//! - `fail_to_connect`: try another endpoint when a connection is refused;
//! - `upstream_request_filter`: forwarding headers and the request id;
//! - `response_filter`: the affinity cookie when the session was (re)pinned;
//! - `fail_to_proxy`: the proxy's own error responses (one builder: `respond`);
//! - `logging`: metrics and the access log.

use crate::access_log;
use crate::affinity::{self, AffinityOutcome, Requested};
use crate::auth;
use crate::client_limits::{self, ClientLimits};
use crate::config::Limits;
use crate::connections;
use crate::error_pages;
use crate::forwarding::{self, X_REQUEST_ID};
use crate::metrics::{method_label, METRICS};
use crate::policy::{self, CompiledRoute, Reply, RequestFacts};
use crate::route::normalize_host;
use crate::route::router::RequestParts;
use crate::state::{SharedSnapshot, Snapshot};
use crate::upstream::Upstream;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE, TRANSFER_ENCODING};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct EdgeProxy {
    snapshot: SharedSnapshot,
    /// Connections for the proxy's own requests (error pages, auth), pooled.
    subrequests: Arc<pingora::connectors::http::v1::Connector>,
    /// Set when the drain begins (a shutdown hook): every response from then
    /// on, in flight or not, says `Connection: close`.
    draining: Arc<AtomicBool>,
}

impl EdgeProxy {
    pub fn new(snapshot: SharedSnapshot, draining: Arc<AtomicBool>) -> Self {
        EdgeProxy {
            snapshot,
            subrequests: Arc::new(pingora::connectors::http::v1::Connector::new(None)),
            draining,
        }
    }
}

/// After SIGTERM pingora marks the responses of requests it reads from then
/// on `Connection: close`; one already in flight would still say keep-alive.
fn close_when_draining(session: &mut Session, draining: &AtomicBool) {
    if draining.load(Ordering::Relaxed) {
        session.set_keepalive(None);
    }
}

/// Per-request state, shared by the phases.
pub struct RequestCtx {
    started: Instant,
    /// Kept as the header value it is sent as, upstream and back (empty until
    /// the request head is read).
    request_id: http::HeaderValue,
    /// The snapshot this request reads from start to end (one load).
    snapshot: Arc<Snapshot>,
    route: Option<Arc<CompiledRoute>>,
    /// The route's backend this request goes to, by index (chosen once,
    /// kept on retries).
    backend: Option<usize>,
    /// What the client's affinity cookie asks for (affinity routes only).
    requested: Requested,
    affinity: AffinityOutcome,
    /// Endpoints tried, in order; the last one is the current one.
    tried: Vec<SocketAddr>,
    /// When the first endpoint was chosen.
    upstream_started: Option<Instant>,
    /// The status of the endpoint's response, when one came.
    upstream_status: Option<u16>,
    /// This request counted in flight to its endpoint (least-loaded routes).
    in_flight: Option<crate::upstream::InFlight>,
    /// Request body bytes seen so far, against `limits.max_body_bytes`.
    body_bytes: u64,
    /// Served by the route's default backend: its own had no ready endpoint.
    on_default_backend: bool,
    /// The response is an error backend's page (written by the proxy).
    error_page: bool,
    /// Headers the auth service's answer adds to the request.
    auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The auth service's cookies for the response.
    auth_cookies: Option<Box<auth::AuthCookies>>,
    /// This request's place among its client's requests in flight on the
    /// route (`limit-connections`), given back when the request ends.
    held: Option<client_limits::Held>,
    /// Response body bytes sent so far (routes with a `limit-rate`).
    body_sent: u64,
}

impl RequestCtx {
    /// The request id as text: plain ASCII, as `request_id` keeps or makes it.
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.tried.last().copied()
    }

    /// The upstream of the chosen backend.
    fn upstream(&self) -> Option<&Arc<Upstream>> {
        let route = self.route.as_ref()?;
        if self.on_default_backend {
            return route.error_backend.as_ref().map(|e| &e.upstream);
        }
        route.backends.get(self.backend?)
    }

    /// What an error backend is told about this request.
    fn original<'a>(&'a self, session: &'a Session, code: u16) -> error_pages::Original<'a> {
        error_pages::Original {
            code,
            req: session.req_header(),
            client: peer_ip(session),
            request_id: self.request_id(),
        }
    }
}

/// The host a request is for: HTTP/2's `:authority`, or an absolute-form
/// target's authority, which wins over the Host header (RFC 9112 section
/// 3.2.2). `None`: the target is ambiguous.
fn request_host(req: &RequestHeader) -> Option<&[u8]> {
    // HTTP/2: `:authority` is the URI's authority.
    if let Some(authority) = req.uri.authority() {
        return Some(authority.as_str().as_bytes());
    }
    match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute { authority, .. } => Some(authority),
        RawTargetAuthority::AmbiguousAuthority => None,
        RawTargetAuthority::None => Some(req.headers.get(HOST).map_or(&b""[..], |v| v.as_bytes())),
    }
}

/// Requests refused before routing: framing an upstream might read differently
/// than we do (request smuggling), and the configured size limits.
fn refuse(req: &RequestHeader, limits: &Limits) -> Option<(u16, &'static str)> {
    let lengths = req.headers.get_all(CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Some((400, "more than one Content-Length\n"));
    }
    if lengths == 1 && req.headers.contains_key(TRANSFER_ENCODING) {
        return Some((400, "Content-Length together with Transfer-Encoding\n"));
    }
    if req.headers.len() > limits.max_headers {
        return Some((431, "too many header fields\n"));
    }
    let header_bytes: usize = req.raw_path().len()
        + req
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if header_bytes > limits.max_header_bytes {
        return Some((431, "request header fields too large\n"));
    }
    None
}

/// A client's X-Request-Id is kept when it is short and plain (it lands in logs
/// and upstream headers); otherwise a fresh one is generated.
fn request_id(req: &RequestHeader) -> http::HeaderValue {
    if let Some(v) = req.headers.get(&X_REQUEST_ID) {
        let bytes = v.as_bytes();
        let sane = (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b));
        if sane {
            return v.clone();
        }
        METRICS.rejected_request_ids.inc();
    }
    let mut id = [0; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut id);
    http::HeaderValue::from_str(id).expect("hex digits are a header value")
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The peer's IP address (the client, or the proxy in front of it).
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client's address as limits and allowlists see it: the peer, or with
/// `trusted_proxies` the forwarded client.
fn client_ip(session: &Session, snapshot: &Snapshot) -> Option<std::net::IpAddr> {
    forwarding::client_ip(
        session.req_header(),
        peer_ip(session),
        &snapshot.trusted_proxies,
    )
}

/// The answer to `client` over one of `limits`' rates, if it is.
fn over_rate(client: std::net::IpAddr, limits: &ClientLimits) -> Option<Reply> {
    let limited = limits.admit_request(client).err()?;
    Some(limited_reply(limited.status, Some(limited.retry_after)))
}

fn limited_reply(status: u16, retry_after: Option<u64>) -> Reply {
    let mut reply = Reply::text(status, "too many requests from this address\n");
    if let Some(seconds) = retry_after {
        reply
            .headers
            .push((http::header::RETRY_AFTER, http::HeaderValue::from(seconds)));
    }
    reply
}

/// Answer the client directly: the one builder of the proxy's own responses
/// (a short text body, the request id, a `Location` for redirects). A 503 for
/// an upstream whose endpoints are not known yet (discovery has not answered
/// since start-up or the reload) says so, and to retry in a second.
///
/// Boxed: the filters that may answer await it in many places, and inline
/// its future would size theirs, which pingora boxes for every request.
fn respond<'a>(
    session: &'a mut Session,
    ctx: &'a RequestCtx,
    reply: Reply,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(write_reply(session, ctx, reply))
}

async fn write_reply(session: &mut Session, ctx: &RequestCtx, reply: Reply) -> Result<()> {
    let upstream = ctx
        .upstream()
        .or_else(|| ctx.route.as_ref().and_then(|r| r.backends.primary()));
    let unsynced = reply.status == 503 && upstream.is_some_and(|u| !u.is_synced());
    let body = if unsynced {
        "this service's endpoints are not known yet\n".into()
    } else {
        reply.body
    };
    let mut resp = ResponseHeader::build(reply.status, Some(5))?;
    if unsynced {
        resp.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    if let Some(location) = reply.location {
        resp.insert_header(http::header::LOCATION, location)?;
    }
    for (name, value) in reply.headers {
        resp.insert_header(name, value)?;
    }
    // A 204 (a CORS preflight) has no body and says no length (RFC 9110 8.6).
    if reply.status != 204 {
        resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(CONTENT_LENGTH, body.len())?;
    }
    resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
    session.write_response_header(Box::new(resp), false).await?;
    let body = match body {
        std::borrow::Cow::Borrowed(b) => Bytes::from_static(b.as_bytes()),
        std::borrow::Cow::Owned(b) => Bytes::from(b),
    };
    session.write_response_body(Some(body), true).await
}

/// Conditions of a route (method, headers, query) read the request head.
/// A request as route conditions see it: its head, and whether it came over TLS.
struct Parts<'a> {
    req: &'a RequestHeader,
    tls: bool,
}

impl RequestParts for Parts<'_> {
    fn method(&self) -> &str {
        self.req.method.as_str()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req.headers.get(name).map(|v| v.as_bytes())
    }
    fn query(&self) -> Option<&str> {
        self.req.uri.query()
    }
    fn tls(&self) -> bool {
        self.tls
    }
}

fn error_body(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        413 => "request body too large\n",
        404 => "no route for this host and path\n",
        502 => "no endpoint of this service answered\n",
        503 => "this service has no ready endpoint\n",
        504 => "the endpoint did not answer in time\n",
        _ => "the proxy could not serve this request\n",
    }
}

impl EdgeProxy {
    /// Answer with the error backend's page for `code` (see `error_pages`);
    /// `false`: there is none, the caller answers.
    async fn error_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
    ) -> Result<bool> {
        let Some(route) = ctx.route.clone().filter(|_| !ctx.on_default_backend) else {
            return Ok(false);
        };
        let original = ctx.original(session, code);
        let Some((head, body)) = error_pages::fetch(&self.subrequests, &route, &original).await
        else {
            return Ok(false);
        };
        self.write_error_page(session, ctx, &route, head, body)
            .await?;
        Ok(true)
    }

    /// Send an error backend's page as the answer.
    async fn write_error_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &CompiledRoute,
        mut head: ResponseHeader,
        body: Bytes,
    ) -> Result<()> {
        head.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        for (name, value) in route.response_headers.iter() {
            head.insert_header(name.clone(), value.clone())?;
        }
        close_when_draining(session, &self.draining);
        ctx.error_page = true;
        session.write_response_header(Box::new(head), false).await?;
        let body = (!body.is_empty()).then_some(body);
        session.write_response_body(body, true).await
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    /// None. pingora's default adds a response compression module, disabled,
    /// whose context is still built and whose filters still run for every
    /// request; edge-proxy passes bodies on as the pods sent them.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: http::HeaderValue::from_static(""),
            snapshot: self.snapshot.load_full(),
            route: None,
            backend: None,
            requested: Requested::NoCookie,
            affinity: AffinityOutcome::None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_status: None,
            in_flight: None,
            body_bytes: 0,
            on_default_backend: false,
            error_page: false,
            auth_headers: Vec::new(),
            auth_cookies: None,
            held: None,
            body_sent: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        connections::head_read();
        close_when_draining(session, &self.draining);
        ctx.request_id = request_id(session.req_header());
        let snapshot = ctx.snapshot.clone();
        if let Some((status, body)) = refuse(session.req_header(), &snapshot.limits) {
            respond(session, ctx, Reply::text(status, body)).await?;
            return Ok(true);
        }
        // `limits.per_client` before routing: a limited answer costs the
        // least (40% of a proxied request), whatever host it asks for.
        if let Some(limits) = snapshot.per_client.as_ref().filter(|l| !l.rates.is_empty()) {
            let client = client_ip(session, &snapshot);
            if let Some(reply) = client.and_then(|c| over_rate(c, limits)) {
                respond(session, ctx, reply).await?;
                return Ok(true);
            }
        }
        let req = session.req_header();
        let Some(host) = request_host(req) else {
            respond(session, ctx, Reply::text(400, "ambiguous request target\n")).await?;
            return Ok(true);
        };
        let authority = std::str::from_utf8(host).unwrap_or("");
        let host = normalize_host(authority);
        let Some(route) = snapshot
            .router
            .find_request(
                &host,
                req.uri.path(),
                &Parts {
                    req,
                    tls: is_tls(session),
                },
            )
            .cloned()
        else {
            respond(session, ctx, Reply::text(404, error_body(404))).await?;
            return Ok(true);
        };
        // The route's per-client limits, as nginx's run before access checks:
        // a flood never reaches the auth service.
        if let Some(limits) = &route.client_limits {
            let over = client_ip(session, &snapshot).and_then(|client| {
                over_rate(client, limits).or_else(|| match limits.hold(client) {
                    Some(held) => {
                        ctx.held = Some(held);
                        None
                    }
                    None => Some(limited_reply(limits.status, None)),
                })
            });
            if let Some(reply) = over {
                ctx.route = Some(route);
                respond(session, ctx, reply).await?;
                return Ok(true);
            }
        }
        let req = session.req_header();
        // The route's request policies, in its order: the first that answers
        // wins; then its auth service, if it has one.
        if !route.request.is_empty() || route.auth.is_some() || route.basic_auth.is_some() {
            let facts = RequestFacts {
                req,
                host: &host,
                authority,
                peer: peer_ip(session),
                tls: is_tls(session),
                trusted_proxies: &snapshot.trusted_proxies,
                https_port: snapshot.https_port,
                local_port: session
                    .server_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.port()),
            };
            let mut reply = route.check_request(&facts);
            if let (None, Some(basic)) = (&reply, &route.basic_auth) {
                let authorization = req.headers.get(http::header::AUTHORIZATION);
                // Boxed: bcrypt's wait stays out of every request's future.
                if !Box::pin(basic.allows(authorization.map(|v| v.as_bytes()))).await {
                    let mut denied = Reply::text(401, "authentication required\n");
                    denied
                        .headers
                        .push((http::header::WWW_AUTHENTICATE, basic.challenge()));
                    reply = Some(denied);
                }
            }
            if let (None, Some(auth)) = (&reply, &route.auth) {
                // Boxed: the sub-request's future stays out of every request's.
                let asked = auth::check(
                    &self.subrequests,
                    auth,
                    &facts,
                    ctx.request_id(),
                    &route.timeouts,
                );
                match Box::pin(asked).await {
                    auth::Verdict::Allow(headers, cookies) => {
                        ctx.auth_headers = headers;
                        ctx.auth_cookies = cookies;
                    }
                    auth::Verdict::Deny(denied) => reply = Some(denied),
                }
            }
            if let Some(reply) = reply {
                ctx.route = Some(route);
                respond(session, ctx, reply).await?;
                return Ok(true);
            }
        }
        if policy::body_too_large(req, route.max_body_bytes) {
            ctx.route = Some(route);
            respond(session, ctx, Reply::text(413, error_body(413))).await?;
            return Ok(true);
        }
        if route.backends.is_empty() {
            ctx.route = Some(route);
            respond(
                session,
                ctx,
                Reply::text(500, "this route has no backend\n"),
            )
            .await?;
            return Ok(true);
        }
        if route.backends.has_invalid_share() {
            match route.backends.pick_or_invalid() {
                Some(i) => ctx.backend = Some(i),
                None => {
                    ctx.route = Some(route);
                    let reply = Reply::text(500, "this backend of the route is invalid\n");
                    respond(session, ctx, reply).await?;
                    return Ok(true);
                }
            }
        }
        if let Some(affinity) = &route.affinity {
            let cookies = req.headers.get_all(COOKIE).into_iter();
            ctx.requested = affinity::requested(cookies.map(|h| h.as_bytes()), &affinity.cookie);
        }
        ctx.route = Some(route);
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Chunked bodies declare no length: count them as they stream.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let limit = ctx
            .route
            .as_ref()
            .map_or(ctx.snapshot.limits.max_body_bytes, |r| r.max_body_bytes);
        if ctx.body_bytes > limit {
            return Error::e_explain(HTTPStatus(413), "request body too large");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx.route.clone().ok_or_else(|| Error::new(InternalError))?;
        // The backend: the one whose endpoint the affinity cookie names (a
        // pinned client stays on its side of a canary or a split), else the
        // canary rules', else one by weight; chosen once, so retries stay.
        if ctx.backend.is_none() {
            let pinned_to = ctx
                .requested
                .endpoint()
                .and_then(|id| route.backends.holding(id));
            let by_rules = || {
                let canary = route.canary.as_ref()?;
                Some(usize::from(canary.to_canary(session.req_header())))
            };
            ctx.backend = pinned_to
                .or_else(by_rules)
                .or_else(|| route.backends.pick());
        }
        let upstream = ctx
            .backend
            .and_then(|i| route.backends.get(i))
            .ok_or_else(|| Error::new(InternalError))?;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        let pinned = ctx
            .requested
            .endpoint()
            .and_then(|id| upstream.pinned(id))
            .filter(|addr| !ctx.tried.contains(addr));
        let endpoint = match pinned {
            Some(addr) => {
                ctx.affinity = AffinityOutcome::Pinned;
                Some(addr)
            }
            None => {
                if let Some(affinity) = &route.affinity {
                    ctx.affinity = ctx.requested.outcome_of_a_new_pick();
                    // A known endpoint that failed: keep the cookie, unless
                    // the route re-pins on failure (ConfigMap routes do).
                    let known = ctx
                        .requested
                        .endpoint()
                        .is_some_and(|id| upstream.knows(id));
                    if known && !affinity.change_on_failure {
                        ctx.affinity = AffinityOutcome::Kept;
                    }
                }
                match &route.hash_by {
                    Some(h) => {
                        let client = peer_ip(session);
                        let key = policy::hash_key(&h.key, session.req_header(), client);
                        upstream.pick_hashed(&key, &ctx.tried, usize::from(h.subset))
                    }
                    None if route.least_loaded => upstream.pick_least_loaded(&ctx.tried),
                    None => upstream.pick(&ctx.tried),
                }
            }
        };
        // No ready endpoint: the default backend serves, when the route has
        // one (ingress-nginx's `default-backend`), and keeps serving retries.
        let was_on_default = std::mem::take(&mut ctx.on_default_backend);
        let endpoint = match (endpoint, &route.error_backend) {
            (None, Some(e)) if was_on_default || ctx.tried.is_empty() => {
                let addr = e.upstream.pick(&ctx.tried);
                if addr.is_some() {
                    ctx.on_default_backend = true;
                    ctx.affinity = AffinityOutcome::None;
                }
                addr
            }
            (endpoint, _) => endpoint,
        };
        let Some(addr) = endpoint else {
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            return Error::e_explain(
                HTTPStatus(status),
                format!("no ready endpoint left for {}", upstream.key),
            );
        };
        ctx.tried.push(addr);
        if route.least_loaded && !ctx.on_default_backend {
            ctx.in_flight = upstream.enter(addr);
        }

        let protocol = route.protocol.as_ref().filter(|_| !ctx.on_default_backend);
        let mut peer = match protocol {
            None => HttpPeer::new(addr, false, String::new()),
            Some(p) => {
                // rustls verifies the name it connects to, and sends it as SNI;
                // an IP address is sent as no SNI (nginx's default) and, with
                // verification off, checked against nothing.
                let name = match (p.verify || p.sni, &p.name) {
                    (true, Some(name)) => name.clone(),
                    _ => addr.ip().to_string(),
                };
                let mut peer = HttpPeer::new(addr, p.tls, name);
                peer.options.verify_cert = p.verify;
                peer.options.verify_hostname = p.verify;
                peer.options.ca = route.upstream_tls.ca.clone();
                peer.client_cert_key = route.upstream_tls.client_cert.clone();
                if p.http2 {
                    // By ALPN over TLS, by prior knowledge (h2c) without.
                    peer.options.set_http_version(2, 2);
                }
                peer
            }
        };
        let t = &route.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        // A deadline for the whole exchange: what is left of it bounds each
        // wait here; none left is a 504 without trying.
        if let Some(total) = route.request_timeout {
            let left = total.saturating_sub(ctx.started.elapsed());
            if left.is_zero() {
                return Error::e_explain(HTTPStatus(504), "the route's request timeout passed");
            }
            let o = &mut peer.options;
            o.connection_timeout = o.connection_timeout.map(|d| d.min(left));
            o.read_timeout = o.read_timeout.map(|d| d.min(left));
            o.write_timeout = o.write_timeout.map(|d| d.min(left));
        }
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
        // A silent endpoint (timeout, no route) costs every request the connect
        // timeout: hold it back for a while. A refusal costs nothing, and the
        // endpoint may be back the next moment (a restart on the same address).
        let silent = matches!(e.etype(), ConnectTimedout | ConnectNoRoute);
        if let (true, Some(upstream), Some(addr)) = (silent, ctx.upstream(), ctx.endpoint()) {
            upstream.connect_failed(addr);
        }
        let metrics = ctx.route.as_ref().map(|r| &r.metrics);
        if let Some(m) = metrics {
            m.connect_errors.inc();
        }
        // Nothing was sent yet: another endpoint can serve the request.
        if ctx.tried.len() <= ctx.snapshot.retries {
            if let Some(m) = metrics {
                m.retries.inc();
            }
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client = peer_ip(session);
        forwarding::apply(
            upstream_request,
            client,
            is_tls(session),
            &ctx.snapshot.trusted_proxies,
        )?;
        upstream_request.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        if let Some(route) = &ctx.route {
            if let Some(rewrite) = &route.rewrite {
                let uri = &upstream_request.uri;
                if let Some(new) = rewrite.apply(uri.path(), uri.query()) {
                    let uri = new
                        .parse::<http::Uri>()
                        .or_err(InvalidHTTPHeader, "the rewritten path is not a URI")?;
                    upstream_request.set_uri(uri);
                }
            }
            for (name, value) in route.set_headers.iter() {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
            if let Some(rewrite) = &route.rewrite_url {
                rewrite_url(rewrite, upstream_request)?;
            }
            if let Some(changes) = &route.request_changes {
                changes.apply(
                    upstream_request,
                    |m, n, v| m.insert_header(n, v),
                    |m, n, v| m.append_header(n, v).map(|_| ()),
                    |m, n| drop(m.remove_header(n)),
                )?;
            }
            if ctx.on_default_backend {
                error_pages::describe(route, &ctx.original(session, 503), upstream_request);
            }
            for (name, value) in &ctx.auth_headers {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
            // The password stays here, as ingress-nginx clears it.
            if route.basic_auth.is_some() {
                upstream_request.remove_header(&http::header::AUTHORIZATION);
            }
            // Once, as the request first goes upstream (not again on a retry).
            if !route.mirrors.is_empty() && ctx.tried.len() == 1 {
                crate::mirror::send(&self.subrequests, &route.mirrors, upstream_request);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        close_when_draining(session, &self.draining);
        let intercepted = ctx.route.as_ref().is_some_and(|r| r.intercepts(status));
        // Boxed: the rare path's large future stays out of every request's.
        if intercepted && Box::pin(self.error_page(session, ctx, status)).await? {
            // Ends the proxying of the endpoint's response; the client
            // already has its answer.
            return Error::e_explain(HTTPStatus(status), "replaced by an error page");
        }
        upstream_response.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        if let Some(started) = ctx.upstream_started {
            let elapsed = started.elapsed().as_secs_f64();
            route.metrics.upstream_duration.observe(elapsed);
        }
        for (name, value) in route.response_headers.iter() {
            upstream_response.insert_header(name.clone(), value.clone())?;
        }
        if let Some(changes) = &route.response_changes {
            changes.apply(
                upstream_response,
                |m, n, v| m.insert_header(n, v),
                |m, n, v| m.append_header(n, v).map(|_| ()),
                |m, n| drop(m.remove_header(n)),
            )?;
        }
        if let Some(cookies) = &ctx.auth_cookies {
            for cookie in cookies.for_status(status) {
                upstream_response.append_header(SET_COOKIE, cookie.clone())?;
            }
        }
        if let Some(cors) = &route.cors {
            if let Some(origin) = cors.allowed_origin(session.req_header()) {
                for (name, value) in cors.headers(origin) {
                    upstream_response.insert_header(name, value)?;
                }
            }
        }
        let (Some(affinity), Some(upstream), Some(addr)) =
            (&route.affinity, ctx.upstream(), ctx.endpoint())
        else {
            return Ok(());
        };
        if ctx.affinity.sets_cookie() {
            let id = upstream.endpoint_id(&addr);
            let user_agent = session
                .req_header()
                .headers
                .get(http::header::USER_AGENT)
                .map(|v| v.as_bytes());
            let now = std::time::SystemTime::now();
            let cookie = affinity::set_cookie(affinity, id, is_tls(session), user_agent, now);
            upstream_response.append_header(SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    /// `limit-rate`: hold each chunk back until the body so far is within
    /// the rate, counted from the request's start as nginx counts it.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(route) = &ctx.route else {
            return Ok(None);
        };
        if route
            .request_timeout
            .is_some_and(|total| ctx.started.elapsed() > total)
        {
            // Past the deadline mid-body: the response is cut.
            return Error::e_explain(ReadTimedout, "the route's request timeout passed");
        }
        let Some(rate) = route.response_rate else {
            return Ok(None);
        };
        ctx.body_sent += body.as_ref().map_or(0, |b| b.len() as u64);
        Ok(policy::response_delay(
            &rate,
            ctx.body_sent,
            ctx.started.elapsed(),
        ))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    // The client is gone: nobody to answer.
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // A response already started cannot be replaced; the connection closes.
        if code > 0 && session.response_written().is_none() {
            if ctx.request_id.is_empty() {
                ctx.request_id = request_id(session.req_header());
            }
            let intercepted = ctx.route.as_ref().is_some_and(|r| r.intercepts(code));
            let answered = match intercepted {
                true => Box::pin(self.error_page(session, ctx, code)).await,
                false => Ok(false),
            };
            let answered = match answered {
                Ok(true) => Ok(()),
                _ => respond(session, ctx, Reply::text(code, error_body(code))).await,
            };
            if let Err(e) = answered {
                tracing::debug!("cannot send the error response: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// How pingora's own log lines name a request: never its query string or
    /// cookies (README, Security), the route and the request id instead.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let route = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        format!(
            "{} {}, route {route}, request id {}",
            req.method,
            req.uri.path(),
            ctx.request_id()
        )
    }

    /// A request's final error: the access log line and the metrics already
    /// hold our own answers (404, 413, 502/503 without endpoints) and clients
    /// that went away; pingora's error line is kept for real upstream failures.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        matches!(e.etype(), HTTPStatus(_)) || e.esource() == &ErrorSource::Downstream
    }

    /// A request pingora refused before any phase (a head that does not parse,
    /// CONNECT): counted and logged like every other answer of the proxy's own,
    /// without its (unparsed) method, path or headers.
    fn request_refused(
        &self,
        session: &pingora::protocols::http::ServerSession,
        status: u16,
        e: &Error,
    ) {
        let code = status_label(status);
        crate::metrics::proxy_response(status).inc();
        METRICS
            .requests
            .with_label_values(&["-", "-", "-", "OTHER", code])
            .inc();
        if access_log::enabled() {
            // The type only: pingora's context quotes the raw head (query
            // string, cookies).
            let kind = e.etype().as_str();
            access_log::record(&access_log::Entry {
                client: session.client_addr().and_then(|a| a.as_inet()).copied(),
                host: None,
                method: "-",
                path: b"-",
                protocol: http::Version::HTTP_11,
                status,
                bytes_in: 0,
                bytes_out: 0,
                duration: Duration::ZERO,
                upstream: None,
                route: "-",
                service: "-",
                affinity: AffinityOutcome::None.as_str(),
                request_id: "-",
                error: Some(&kind as &dyn std::fmt::Display),
            });
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let code = status_label(status);
        let (route, host, service) = ctx.route.as_ref().map_or(("-", "-", "-"), |r| {
            (r.name.as_str(), r.host.as_str(), r.service.as_str())
        });
        let req = session.req_header();
        let method = method_label(&req.method);
        let elapsed = ctx.started.elapsed();
        match &ctx.route {
            Some(r) => {
                r.metrics.request(method, code);
                r.metrics.duration.observe(elapsed.as_secs_f64());
                r.metrics.affinity(ctx.affinity);
            }
            // No route matched: the rare path, by label.
            None => {
                METRICS
                    .requests
                    .with_label_values(&[route, host, service, method, code])
                    .inc();
                METRICS
                    .request_duration
                    .with_label_values(&[route])
                    .observe(elapsed.as_secs_f64());
            }
        }
        if ctx.upstream_status.is_none() && status != 0 {
            crate::metrics::proxy_response(status).inc();
        }

        // With `logging.access: off` nothing below is formatted at all.
        if access_log::enabled() {
            access_log::record(&access_log::Entry {
                client: session.client_addr().and_then(|a| a.as_inet()).copied(),
                host: request_host(req),
                method: req.method.as_str(),
                path: req.uri.path().as_bytes(),
                protocol: req.version,
                status,
                bytes_in: session.body_bytes_read(),
                bytes_out: session.body_bytes_sent(),
                duration: elapsed,
                upstream: ctx.endpoint(),
                route,
                service,
                affinity: ctx.affinity.as_str(),
                request_id: ctx.request_id(),
                // An error page replaced the answer: that is no error here.
                error: e
                    .filter(|_| !ctx.error_page)
                    .map(|e| e as &dyn std::fmt::Display),
            });
        }
    }
}

/// Status codes as metric labels: real codes (100-599, a bounded set) as
/// digits, anything else (0: no response was sent) as "none".
/// Gateway API's URLRewrite on the request sent upstream: the Host header
/// and the path (the query is kept).
fn rewrite_url(rewrite: &crate::route::RewriteUrl, req: &mut RequestHeader) -> Result<()> {
    if let Some(host) = &rewrite.hostname {
        req.insert_header(http::header::HOST, host.as_str())?;
    }
    if let Some(change) = &rewrite.path {
        let uri = &req.uri;
        let mut new = policy::change_path(change, uri.path());
        if let Some(q) = uri.query() {
            new.push('?');
            new.push_str(q);
        }
        let uri = new
            .parse::<http::Uri>()
            .or_err(InvalidHTTPHeader, "the rewritten path is not a URI")?;
        req.set_uri(uri);
    }
    Ok(())
}

fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (100u16..600).map(|c| c.to_string()).collect());
    match status {
        100..=599 => &LABELS[usize::from(status - 100)],
        _ => "none",
    }
}
