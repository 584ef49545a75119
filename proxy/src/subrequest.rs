//! Requests the proxy itself sends besides the one it proxies: an error
//! backend's page (`error_pages`), an external auth service's verdict
//! (`auth`). HTTP/1.1 over pingora's own HTTP/1 connector (pooled), a
//! bodiless request, the whole answer read up to a size.

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;

/// Send `req` (no body) to `peer`; its answer, the body at most `max_body`
/// bytes. A connection that answered whole goes back to the pool.
pub async fn send(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    max_body: usize,
) -> Result<(ResponseHeader, Bytes)> {
    // HTTP/1.1 only: the proxy's own HTTP/1 client code, no second copy of
    // pingora's generic client (h2 included) in the binary for a rare path.
    let (mut session, _) = connector.get_http_session(peer).await?;
    session.write_request_header(Box::new(req)).await?;
    session.finish_body().await?;
    session.read_response().await?;
    let head = session
        .resp_header()
        .cloned()
        .ok_or_else(|| Error::new(ErrorType::InvalidHTTPHeader))?;
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_body_bytes().await? {
        if body.len() + chunk.len() > max_body {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("an answer larger than {max_body} bytes"),
            );
        }
        body.extend_from_slice(&chunk);
    }
    connector
        .release_http_session(session, peer, Some(Duration::from_secs(60)))
        .await;
    Ok((head, body.freeze()))
}
