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
//! Connections idle between requests wait in `connections::ConnectionLimit`,
//! whose `cleanup` (called by pingora at SIGTERM) keeps them for the linger and
//! then closes them. This module ends the process once nothing is left.

use crate::connections::requests_in_flight;
use crate::metrics::METRICS;
use pingora::server::{ExecutionPhase, Server};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What must happen when the drain starts (hand the status Lease to another
/// proxy, say): registered by whoever needs it, run once on the drain thread.
#[derive(Default)]
pub struct ShutdownHooks(Mutex<Vec<Box<dyn FnOnce() + Send>>>);

impl ShutdownHooks {
    pub fn add(&self, hook: impl FnOnce() + Send + 'static) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// Run every hook (each may block briefly), in the order they were added.
    pub fn run(&self) {
        let hooks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for hook in hooks {
            hook();
        }
    }
}

/// pingora sleeps out the whole grace period after SIGTERM, busy or not. This
/// ends the process as soon as there is nothing left to drain: no client
/// connection open, or no request in flight once idle keep-alives have had
/// their `linger`. `drain_timeout` (pingora's grace period) stays the bound.
pub fn exit_when_drained(server: &Server, linger: Duration, hooks: Arc<ShutdownHooks>) {
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
            // E.g. another proxy takes over the Ingress status while this one drains.
            hooks.run();
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
