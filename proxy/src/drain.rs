//! Closing client connections gently on SIGTERM.
//!
//! On SIGTERM pingora stops accepting, marks every later response
//! `Connection: close`, and — at once — drops every keep-alive connection that
//! is waiting for its next request. A client that had just sent that request
//! sees the connection close under it (wrk counts a read error; browsers retry,
//! scripts may not). edge-proxy delays that last step by `linger`: in the
//! meantime each busy connection gets its `Connection: close` on its next
//! response and moves to the replacement proxy by itself; only connections idle
//! for the whole linger are dropped.
//!
//! Connections idle between requests wait in `client_limits::ConnectionLimit`,
//! whose `cleanup` (called by pingora at SIGTERM) keeps them for the linger and
//! then closes them. This module ends the process once nothing is left.

use crate::client_limits::requests_in_flight;
use crate::metrics::METRICS;
use pingora::server::{ExecutionPhase, Server};
use std::time::{Duration, Instant};

/// pingora sleeps out the whole grace period after SIGTERM, busy or not. This
/// ends the process as soon as there is nothing left to drain: no client
/// connection open, or no request in flight once idle keep-alives have had
/// their `linger`. `drain_timeout` (pingora's grace period) stays the bound.
pub fn exit_when_drained(server: &Server, linger: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
            let started = Instant::now();
            // Another proxy takes over the Ingress status while this one drains.
            crate::ingress::shutdown();
            loop {
                let idle = requests_in_flight() == 0;
                if METRICS.client_connections.get() == 0 || (idle && started.elapsed() >= linger) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::info!(after = ?started.elapsed(), "drained: exiting");
            crate::access_log::flush();
            std::process::exit(0);
        })
        .expect("spawn the drain thread");
}
