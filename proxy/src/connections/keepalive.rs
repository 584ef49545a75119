//! pingora's HTTP/1 keep-alive loop (apps/mod.rs), run here so that a
//! connection idle between requests holds only its socket: it waits for the
//! next request's first bytes (`wait_readable`, a patch in
//! third_party/pingora-core) before pingora allocates what reading and
//! proxying a request takes (its request future alone is 14 KiB, its
//! connection future 4 KiB), and closes it after `limits.idle_timeout`, or
//! when the drain's linger is over. HTTP/2 (by ALPN, or h2c by its preface)
//! goes to pingora's own handling.

use crate::metrics::METRICS;
use crate::state::SharedSnapshot;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use tokio::sync::watch;

/// Serve one client connection's requests, one after the other.
pub async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    mut stream: Stream,
    shutdown: &ShutdownWatch,
    state: &SharedSnapshot,
    closing: &watch::Sender<bool>,
) -> Option<Stream> {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return ServerApp::process_new(app, stream, shutdown).await;
    }
    let reuses = app.server_options().and_then(|o| o.keepalive_request_limit);
    let h2c = app.server_options().is_some_and(|o| o.h2c);
    let mut persistent: Option<HttpPersistentSettings> = None;
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let limits = state.load().limits;
        let (idle, reason) = if first {
            (limits.header_timeout, "header_timeout")
        } else {
            (limits.idle_timeout, "idle_timeout")
        };
        let mut closing = closing.subscribe();
        // Idle with as little as possible: the write buffer (1460 bytes)
        // is rebuilt by the next response's first write.
        stream.release_idle_buffers();
        tokio::select! {
            biased;
            ready = stream.wait_readable() => ready.ok()?,
            _ = closing.wait_for(|closing| *closing) => return None,
            _ = tokio::time::sleep(idle) => {
                METRICS.client_connections_closed.with_label_values(&[reason]).inc();
                return None;
            }
        }
        // HTTP/2 with prior knowledge (h2c, as gRPC clients speak it without
        // TLS) opens with "PRI * HTTP/2.0": pingora's own handling takes it.
        if first && h2c && stream.get_ssl_digest().is_none() {
            let mut start = [0u8; 3];
            let peek = tokio::time::timeout(limits.header_timeout, stream.try_peek(&mut start));
            match peek.await {
                Ok(Ok(true)) if &start == b"PRI" => {
                    return ServerApp::process_new(app, stream, shutdown).await;
                }
                Ok(Ok(_)) => {}
                _ => return None,
            }
        }
        let mut session = Box::new(ServerSession::new_http1(stream));
        session.set_keepalive_reuses_remaining(reuses);
        // Header names are case-insensitive; keeping their case costs a
        // second header map per request and per response (7% of the
        // instructions per request). They go on lowercase, or Title-Case
        // for the common standard ones, as with HAProxy.
        session.set_preserve_header_case(false);
        if let Some(settings) = persistent.take() {
            settings.apply_to_session(&mut session);
        }
        let reused: ReusedHttpStream = app.process_new_http_boxed(session, shutdown).await?;
        (stream, persistent) = reused.consume();
    }
    None
}
