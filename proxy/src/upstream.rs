//! One Service port behind the proxy: its endpoints, balancer and affinity index.
//!
//! Endpoints come from a [`ServiceDiscovery`] (the seam every discovery mode
//! plugs into) through pingora-load-balancing's [`LoadBalancer`], which balances
//! new sessions over *ready* endpoints. The affinity index maps cookie ids to
//! every *discovered* endpoint, including those discovery marks as not ready but
//! still serving (terminating pods): pinned sessions may finish there, new ones
//! never start there.
//!
//! Passive health: an endpoint whose connect timed out (a killed container's
//! address stops answering) is skipped for [`FAILED_CONNECT_HOLD`], by new and
//! pinned sessions alike, so a vanished endpoint costs one timeout rather than
//! one per request until discovery drops it. A refused connect is not held:
//! it costs nothing, and the endpoint may be back at once. When every
//! endpoint is held, they are tried anyway.

use crate::affinity::{EndpointHasher, EndpointId};
use crate::config::UpstreamKey;
use arc_swap::ArcSwap;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an endpoint that failed a connect is skipped.
pub const FAILED_CONNECT_HOLD: Duration = Duration::from_secs(10);

pub struct Upstream {
    pub key: UpstreamKey,
    hasher: EndpointHasher,
    balancer: LoadBalancer<RoundRobin>,
    /// Cookie id -> endpoint address, for every discovered endpoint.
    pinnable: ArcSwap<HashMap<EndpointId, SocketAddr>>,
    /// Discovery has delivered its first complete endpoint list.
    synced: AtomicBool,
    /// Endpoints that failed a connect, skipped until the instant beside them.
    failed: Mutex<Vec<(SocketAddr, Instant)>>,
    /// `failed` is not empty: the request path looks no further when it is.
    any_failed: AtomicBool,
    /// The discovery task feeding this upstream, stopped when it is dropped
    /// (its routes are gone from the configuration).
    task: OnceLock<AbortOnDrop>,
}

/// Aborts a control-plane task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Upstream {
    pub fn new(key: UpstreamKey, discovery: Box<dyn ServiceDiscovery + Send + Sync>) -> Self {
        let hasher = EndpointHasher::new(&key.namespace, &key.service);
        Upstream {
            key,
            hasher,
            balancer: LoadBalancer::from_backends(Backends::new(discovery)),
            pinnable: ArcSwap::from_pointee(HashMap::new()),
            synced: AtomicBool::new(false),
            failed: Mutex::new(Vec::new()),
            any_failed: AtomicBool::new(false),
            task: OnceLock::new(),
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Tie a discovery task's life to this upstream's.
    pub fn attach_task(&self, task: AbortOnDrop) {
        let _ = self.task.set(task);
    }

    /// Ask discovery for the current endpoints and publish them.
    pub async fn refresh(&self) -> pingora::Result<()> {
        self.balancer.update().await?;
        let backends = self.balancer.backends().get_backend();
        let index = backends
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (self.hasher.id(a), *a)))
            .collect();
        self.pinnable.store(Arc::new(index));
        Ok(())
    }

    /// The cookie id of an endpoint of this upstream.
    pub fn endpoint_id(&self, addr: &SocketAddr) -> EndpointId {
        self.hasher.id(addr)
    }

    /// The endpoint a cookie id names, if it is still discovered (ready, or
    /// terminating but serving) and has not just failed a connect.
    pub fn pinned(&self, id: EndpointId) -> Option<SocketAddr> {
        self.pinnable
            .load()
            .get(&id)
            .copied()
            .filter(|addr| !self.recently_failed(addr))
    }

    /// A ready endpoint for a new session, skipping those already tried and,
    /// while others are left, those that just failed a connect.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let count = self.pinnable.load().len();
        let select = |skip_failed: bool| {
            self.balancer
                .select_with(b"", count.max(1) * 2, |b: &Backend, ready| {
                    let usable = |a: &SocketAddr| {
                        let held = skip_failed && self.recently_failed(a);
                        !tried.contains(a) && !held
                    };
                    ready && b.addr.as_inet().is_some_and(usable)
                })
                .and_then(|b| b.addr.as_inet().copied())
        };
        select(true).or_else(|| {
            self.any_failed
                .load(Ordering::Relaxed)
                .then(|| select(false))
                .flatten()
        })
    }

    /// A connect to `addr` failed: skip it for a while.
    pub fn connect_failed(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|(a, until)| *until > now && *a != addr);
        failed.push((addr, now + FAILED_CONNECT_HOLD));
        self.any_failed.store(true, Ordering::Relaxed);
    }

    fn recently_failed(&self, addr: &SocketAddr) -> bool {
        if !self.any_failed.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|(_, until)| *until > now);
        self.any_failed.store(!failed.is_empty(), Ordering::Relaxed);
        failed.iter().any(|(a, _)| a == addr)
    }

    /// How many endpoints take new sessions (ready) and how many only finish
    /// pinned ones (discovered but not ready: terminating and still serving).
    pub fn endpoint_counts(&self) -> (usize, usize) {
        let backends = self.balancer.backends();
        let all = backends.get_backend();
        let ready = all.iter().filter(|b| backends.ready(b)).count();
        (ready, all.len() - ready)
    }
}
