//! Request mirroring (Gateway API's RequestMirror): a copy of the request as
//! it goes upstream is sent to each mirror's Service too, from a task of its
//! own; its answer is read and dropped, and nothing about it reaches the
//! client or delays the request. Only requests without a body are copied:
//! the body streams once, to the real backend (a copy without it would be
//! another request, not the same one).

use crate::upstream::Upstream;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a mirrored request may take, all told.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a mirror's answer that is read (then dropped).
const MIRROR_ANSWER_BYTES: usize = 1 << 20;

/// One mirror of a route, compiled.
pub struct CompiledMirror {
    upstream: Arc<Upstream>,
    numerator: u32,
    denominator: u32,
    /// Which request of the share this is.
    turn: AtomicU32,
}

impl CompiledMirror {
    pub fn new(upstream: Arc<Upstream>, numerator: u32, denominator: u32) -> Self {
        CompiledMirror {
            upstream,
            numerator,
            denominator: denominator.max(1),
            turn: AtomicU32::new(0),
        }
    }

    /// Whether this request is in the share mirrored: exactly `numerator`
    /// of every `denominator`, spread.
    fn takes_next(&self) -> bool {
        let n = self.turn.fetch_add(1, Ordering::Relaxed) % self.denominator;
        // Spread over the cycle: request n is taken when the running share
        // crosses a whole number.
        (n * self.numerator) / self.denominator != ((n + 1) * self.numerator) / self.denominator
    }
}

/// Whether a request head says it carries a body.
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Send copies of `req` (the request as it goes upstream) to `mirrors`.
pub fn send(connector: &Arc<Connector>, mirrors: &[CompiledMirror], req: &RequestHeader) {
    if has_body(req) {
        return;
    }
    for mirror in mirrors {
        if !mirror.takes_next() {
            continue;
        }
        let Some(addr) = mirror.upstream.pick(&[]) else {
            continue;
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(MIRROR_TIMEOUT);
        peer.options.read_timeout = Some(MIRROR_TIMEOUT);
        let copy = req.clone();
        let connector = connector.clone();
        tokio::spawn(async move {
            let sent = crate::subrequest::send(&connector, &peer, copy, MIRROR_ANSWER_BYTES);
            match tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!("mirrored request to {addr}: {e}"),
                Err(_) => tracing::debug!("mirrored request to {addr}: no answer in time"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_exact_and_spread() {
        let upstream = Arc::new(Upstream::new(crate::route::UpstreamKey {
            namespace: "default".into(),
            service: "m".into(),
            port: crate::route::ServicePort::Number(80),
            cluster_ip: None,
        }));
        let m = CompiledMirror::new(upstream, 1, 4);
        let taken: Vec<bool> = (0..8).map(|_| m.takes_next()).collect();
        assert_eq!(taken.iter().filter(|t| **t).count(), 2);
        assert!(!taken[..3].iter().all(|t| *t));
        let all = CompiledMirror::new(m.upstream.clone(), 1, 1);
        assert!((0..5).all(|_| all.takes_next()));
        let none = CompiledMirror::new(m.upstream.clone(), 0, 100);
        assert!((0..200).all(|_| !none.takes_next()));
    }
}
