//! Error pages from another Service (ingress-nginx's `custom-http-errors`
//! with `default-backend`): a response with an intercepted code, the
//! endpoint's or the proxy's own, is replaced by what the error backend
//! answers for it, as nginx's `error_page CODE = @custom_…` does.
//!
//! The error backend is asked `GET /` (`HEAD` for a HEAD) with the headers
//! ingress-nginx sends: `X-Code`, `X-Format` (the client's Accept),
//! `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port`, `X-Request-ID`, `X-Forwarded-For` and the client's
//! Host. Its status, headers and body (up to [`MAX_PAGE_BYTES`]) go to the
//! client. When it cannot answer (no endpoint, an error, too slow, too big),
//! the original response goes out instead: an error page never turns an
//! answer into no answer.

use crate::forwarding::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::policy::CompiledRoute;
use bytes::Bytes;
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use std::net::{IpAddr, SocketAddr};

/// An error page larger than this is not used.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// What the error backend's request says about the original one.
pub struct Original<'a> {
    pub code: u16,
    pub req: &'a RequestHeader,
    pub client: Option<IpAddr>,
    pub request_id: &'a str,
}

/// The headers that tell an error backend (or a default backend serving a
/// route without endpoints) which request failed, and how.
pub fn describe(route: &CompiledRoute, original: &Original, req: &mut RequestHeader) {
    let (namespace, ingress) = route
        .origin
        .object()
        .split_once('/')
        .unwrap_or(("", route.origin.object()));
    let (service, port) = route
        .backends
        .primary()
        .map(|u| (u.key.service.clone(), u.key.port.to_string()))
        .unwrap_or_default();
    let accept = original
        .req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let uri = original
        .req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let headers: [(&str, &str); 7] = [
        ("x-code", &original.code.to_string()),
        ("x-format", accept),
        ("x-original-uri", uri),
        ("x-namespace", namespace),
        ("x-ingress-name", ingress),
        ("x-service-name", &service),
        ("x-service-port", &port),
    ];
    for (name, value) in headers {
        // A value that is no header value (never from a parsed request) is left out.
        let _ = req.insert_header(name, value);
    }
    let _ = req.insert_header(X_REQUEST_ID.clone(), original.request_id);
}

/// The error backend's answer for `original`, or `None` (see the module).
pub async fn fetch(
    connector: &Connector,
    route: &CompiledRoute,
    original: &Original<'_>,
) -> Option<(ResponseHeader, Bytes)> {
    let backend = route.error_backend.as_ref()?;
    let addr = backend.upstream.pick(&[])?;
    let limit = route.timeouts.connect + route.timeouts.read;
    match tokio::time::timeout(limit, ask(connector, route, original, addr)).await {
        Ok(Ok(page)) => Some(page),
        Ok(Err(e)) => {
            tracing::warn!(route = %route.name, "error page from {addr} not used: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(route = %route.name, "error page from {addr} not used: no answer within {limit:?}");
            None
        }
    }
}

async fn ask(
    connector: &Connector,
    route: &CompiledRoute,
    original: &Original<'_>,
    addr: SocketAddr,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let method = if original.req.method == http::Method::HEAD {
        "HEAD"
    } else {
        "GET"
    };
    let mut req = RequestHeader::build(method, b"/", Some(12))?;
    if let Some(host) = original.req.headers.get(http::header::HOST) {
        req.insert_header(http::header::HOST, host.clone())?;
    }
    if let Some(client) = original.client {
        req.insert_header(X_FORWARDED_FOR.clone(), client.to_string())?;
    }
    describe(route, original, &mut req);
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(route.timeouts.connect);
    peer.options.read_timeout = Some(route.timeouts.read);
    peer.options.idle_timeout = Some(route.timeouts.idle);
    let (mut head, body) = crate::subrequest::send(connector, &peer, req, MAX_PAGE_BYTES).await?;
    // The body goes out whole: its length, not the backend's framing.
    head.remove_header(&http::header::TRANSFER_ENCODING);
    head.remove_header(&http::header::CONNECTION);
    if method == "GET" {
        head.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    Ok((head, body))
}
