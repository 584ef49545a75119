//! One Service port behind the proxy: its endpoints, balancer and affinity index.
//!
//! Every discovery mode feeds an upstream the same way: [`Upstream::publish`]
//! with an [`EndpointSet`]. The set reaches pingora-load-balancing's
//! [`LoadBalancer`] through one [`ServiceDiscovery`] (the feed below), which
//! balances new sessions over *ready* endpoints. The affinity index maps cookie ids to
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
use crate::route::UpstreamKey;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{BackendIter, BackendSelection, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The endpoints of one upstream, as discovery last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Take new sessions.
    pub ready: BTreeSet<SocketAddr>,
    /// Terminating but still serving: finish the sessions pinned to them only.
    pub serving_terminating: BTreeSet<SocketAddr>,
}

impl EndpointSet {
    pub fn ready(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        EndpointSet {
            ready: addrs.into_iter().collect(),
            serving_terminating: BTreeSet::new(),
        }
    }
}

/// How long an endpoint that failed a connect is skipped.
pub const FAILED_CONNECT_HOLD: Duration = Duration::from_secs(10);

pub struct Upstream {
    pub key: UpstreamKey,
    hasher: EndpointHasher,
    balancer: LoadBalancer<RoundRobin>,
    /// The ready endpoints in address order, taken in turn by `pick`: a
    /// walk over a slice where pingora's selection cloned each backend and
    /// hashed it for its readiness (~1.7 k instructions per request).
    ready: ArcSwap<Vec<SocketAddr>>,
    /// Cookie id -> endpoint address, for every discovered endpoint.
    /// Looked up on every request with a cookie: foldhash, not SipHash (the
    /// ids are ours, from the endpoints).
    pinnable: ArcSwap<HashMap<EndpointId, SocketAddr, foldhash::fast::RandomState>>,
    /// A consistent-hash ring over the ready endpoints (ingress-nginx's
    /// `upstream-hash-by`), rebuilt when they change; built only for an
    /// upstream a hashing route uses (160 points per endpoint).
    ring: ArcSwap<Option<Arc<KetamaHashing>>>,
    wants_ring: AtomicBool,
    /// Requests in flight per endpoint, for least-loaded picks
    /// (`load-balance: ewma`); counted only on routes that pick so.
    loads: ArcSwap<HashMap<SocketAddr, Arc<AtomicUsize>, foldhash::fast::RandomState>>,
    /// Which of equally loaded endpoints goes first.
    turn: AtomicUsize,
    /// The set the balancer reads on `refresh` (see [`Feed`]).
    current: Arc<ArcSwap<EndpointSet>>,
    /// Discovery has delivered its first complete endpoint list.
    synced: AtomicBool,
    /// Endpoints that failed a connect, skipped until the instant beside them.
    failed: Mutex<Vec<(SocketAddr, Instant)>>,
    /// `failed` is not empty: the request path looks no further when it is.
    any_failed: AtomicBool,
    /// What ties discovery to this upstream (a task, a watch registration),
    /// dropped with it when its routes leave the configuration.
    discovery: OnceLock<Box<dyn Send + Sync>>,
}

/// One request in flight to an endpoint (see [`Upstream::enter`]).
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Aborts a control-plane task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Upstream {
    /// An upstream with no endpoints yet, not synced.
    pub fn new(key: UpstreamKey) -> Self {
        let hasher = EndpointHasher::new(&key.namespace, &key.service);
        let current = Arc::new(ArcSwap::from_pointee(EndpointSet::default()));
        let feed = Feed {
            current: current.clone(),
        };
        Upstream {
            key,
            hasher,
            balancer: LoadBalancer::from_backends(Backends::new(Box::new(feed))),
            ready: ArcSwap::from_pointee(Vec::new()),
            pinnable: ArcSwap::from_pointee(HashMap::default()),
            ring: ArcSwap::from_pointee(None),
            loads: ArcSwap::from_pointee(HashMap::default()),
            turn: AtomicUsize::new(0),
            wants_ring: AtomicBool::new(false),
            current,
            synced: AtomicBool::new(false),
            failed: Mutex::new(Vec::new()),
            any_failed: AtomicBool::new(false),
            discovery: OnceLock::new(),
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Tie what feeds this upstream (a task, a registration) to its life.
    pub fn attach(&self, discovery: Box<dyn Send + Sync>) {
        let _ = self.discovery.set(discovery);
    }

    /// Discovery's latest complete endpoint set: applied when it changed, and
    /// the upstream counts as synced from the first one on.
    pub async fn publish(&self, next: EndpointSet) {
        if **self.current.load() != next {
            tracing::info!(
                service = %self.key,
                ready = next.ready.len(),
                serving_terminating = next.serving_terminating.len(),
                "endpoints changed"
            );
            self.current.store(Arc::new(next));
            if let Err(e) = self.refresh().await {
                tracing::error!(service = %self.key, "cannot apply endpoints: {e}");
            }
        }
        self.synced.store(true, Ordering::Release);
    }

    /// Ask the feed for the current endpoints and publish them to the balancer.
    async fn refresh(&self) -> pingora::Result<()> {
        self.balancer.update().await?;
        let all = self.balancer.backends();
        let backends = all.get_backend();
        let ready = backends
            .iter()
            .filter(|b| all.ready(b))
            .filter_map(|b| b.addr.as_inet().copied())
            .collect();
        self.ready.store(Arc::new(ready));
        let index = backends
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (self.hasher.id(a), *a)))
            .collect();
        self.pinnable.store(Arc::new(index));
        // Counters follow the endpoints; one in use keeps its count.
        let old = self.loads.load();
        let loads = backends
            .iter()
            .filter_map(|b| b.addr.as_inet())
            .map(|a| (*a, old.get(a).cloned().unwrap_or_default()))
            .collect();
        self.loads.store(Arc::new(loads));
        if self.wants_ring.load(Ordering::Relaxed) {
            self.build_ring();
        }
        Ok(())
    }

    /// A hashing route uses this upstream: keep its ring from now on.
    pub fn use_ring(&self) {
        if !self.wants_ring.swap(true, Ordering::Relaxed) {
            self.build_ring();
        }
    }

    fn build_ring(&self) {
        let backends = self.balancer.backends();
        let ready: BTreeSet<Backend> = backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .cloned()
            .collect();
        self.ring
            .store(Arc::new(Some(Arc::new(KetamaHashing::build(&ready)))));
    }

    /// The ready endpoint `key` hashes to on the consistent ring, skipping
    /// those already tried and those that just failed a connect (the next
    /// on the ring takes over); `None` when there is none. With `subset` N
    /// above 1, one of the first N distinct such endpoints, in turn: a key
    /// stays within N pods (ingress-nginx's `upstream-hash-by-subset`).
    pub fn pick_hashed(
        &self,
        key: &[u8],
        tried: &[SocketAddr],
        subset: usize,
    ) -> Option<SocketAddr> {
        let ring = self.ring.load_full();
        let mut candidates = ring.as_ref().as_ref()?.iter(key);
        let subset = subset.clamp(1, 16);
        let mut found: [Option<SocketAddr>; 16] = [None; 16];
        let mut count = 0;
        // Each endpoint appears many times on the ring: a bounded walk.
        for _ in 0..64 * subset {
            let Some(addr) = candidates.next().and_then(|b| b.addr.as_inet().copied()) else {
                break;
            };
            let usable = !tried.contains(&addr) && !self.recently_failed(&addr);
            if usable && !found[..count].contains(&Some(addr)) {
                found[count] = Some(addr);
                count += 1;
                if count == subset {
                    break;
                }
            }
        }
        match count {
            0 => None,
            1 => found[0],
            n => found[self.turn.fetch_add(1, Ordering::Relaxed) % n],
        }
    }

    /// The cookie id of an endpoint of this upstream.
    pub fn endpoint_id(&self, addr: &SocketAddr) -> EndpointId {
        self.hasher.id(addr)
    }

    /// The endpoint a cookie id names, if it is still discovered (ready, or
    /// terminating but serving) and has not just failed a connect.
    /// Whether discovery knows the endpoint `id` (ready or still serving),
    /// failing or not.
    pub fn knows(&self, id: EndpointId) -> bool {
        self.pinnable.load().contains_key(&id)
    }

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
        let ready = self.ready.load();
        if ready.is_empty() {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let select = |skip_failed: bool| {
            (0..ready.len())
                .map(|i| ready[(start + i) % ready.len()])
                .find(|a| !(tried.contains(a) || skip_failed && self.recently_failed(a)))
        };
        select(true).or_else(|| {
            self.any_failed
                .load(Ordering::Relaxed)
                .then(|| select(false))
                .flatten()
        })
    }

    /// The ready endpoint with the fewest requests in flight (ties taken in
    /// turn), skipping those tried and those that just failed a connect;
    /// `None` when there is none.
    pub fn pick_least_loaded(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let backends = self.balancer.backends();
        let loads = self.loads.load();
        let candidates: Vec<SocketAddr> = backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .filter_map(|b| b.addr.as_inet().copied())
            .filter(|a| !tried.contains(a) && !self.recently_failed(a))
            .collect();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..candidates.len())
            .map(|i| candidates[(start + i) % candidates.len()])
            .min_by_key(|a| loads.get(a).map_or(0, |l| l.load(Ordering::Relaxed)))
    }

    /// Count a request in flight to `addr` until the guard is dropped.
    pub fn enter(&self, addr: SocketAddr) -> Option<InFlight> {
        let load = self.loads.load().get(&addr)?.clone();
        load.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(load))
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

/// The pingora side of every discovery mode: the current set, with
/// serving-but-terminating endpoints present (pinnable) but disabled (no new
/// sessions).
struct Feed {
    current: Arc<ArcSwap<EndpointSet>>,
}

#[async_trait]
impl ServiceDiscovery for Feed {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let set = self.current.load();
        let mut backends = BTreeSet::new();
        let mut enablement = HashMap::new();
        for addr in &set.ready {
            backends.insert(crate::discovery::backend(*addr));
        }
        for addr in &set.serving_terminating {
            let b = crate::discovery::backend(*addr);
            enablement.insert(enablement_key(&b), false);
            backends.insert(b);
        }
        Ok((backends, enablement))
    }
}

/// The key pingora-load-balancing expects in the enablement map: what its
/// `Backend::hash_key` (crate-private) computes, std's `DefaultHasher` over the
/// backend. Only used within this process, so its instability across Rust
/// releases does not matter here (unlike in a cookie).
fn enablement_key(b: &Backend) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ServicePort;

    fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn terminating_endpoints_are_pinnable_but_not_ready() {
        let key = UpstreamKey {
            namespace: "default".into(),
            service: "web".into(),
            port: ServicePort::Number(80),
            cluster_ip: None,
        };
        let upstream = Upstream::new(key);
        assert!(!upstream.is_synced());
        upstream
            .publish(EndpointSet {
                ready: addrs(&["10.0.0.1:80"]),
                serving_terminating: addrs(&["10.0.0.2:80"]),
            })
            .await;
        assert!(upstream.is_synced());
        let draining: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(
            upstream.pinned(upstream.endpoint_id(&draining)),
            Some(draining)
        );
        for _ in 0..10 {
            assert_eq!(upstream.pick(&[]), Some("10.0.0.1:80".parse().unwrap()));
        }
        assert_eq!(upstream.endpoint_counts(), (1, 1));
        // An empty list is a list: synced, nothing to pick.
        upstream.publish(EndpointSet::default()).await;
        assert_eq!(upstream.pick(&[]), None);
        assert_eq!(upstream.endpoint_counts(), (0, 0));
    }

    #[tokio::test]
    async fn picks_take_ready_endpoints_in_turn_skipping_tried_and_failed() {
        let upstream = Upstream::new(UpstreamKey {
            namespace: "default".into(),
            service: "web".into(),
            port: ServicePort::Number(80),
            cluster_ip: None,
        });
        let all = addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let [a, b, c]: [SocketAddr; 3] =
            all.iter().copied().collect::<Vec<_>>().try_into().unwrap();
        upstream.publish(EndpointSet::ready(all.clone())).await;
        // In turn: every endpoint once in any three picks running.
        let picks: Vec<SocketAddr> = (0..9).filter_map(|_| upstream.pick(&[])).collect();
        for window in picks.windows(3) {
            assert_eq!(window.iter().copied().collect::<BTreeSet<_>>(), all);
        }
        // Those tried are skipped; all tried is none.
        for _ in 0..6 {
            assert_eq!(upstream.pick(&[a, b]), Some(c));
        }
        assert_eq!(upstream.pick(&[a, b, c]), None);
        // One that just failed a connect is skipped while others are left,
        // and taken when it is the only one.
        upstream.connect_failed(b);
        for _ in 0..6 {
            assert_ne!(upstream.pick(&[]), Some(b));
        }
        assert_eq!(upstream.pick(&[a, c]), Some(b));
        // A new set replaces the old one at once.
        upstream.publish(EndpointSet::ready([c])).await;
        for _ in 0..3 {
            assert_eq!(upstream.pick(&[]), Some(c));
        }
    }

    #[tokio::test]
    async fn least_loaded_picks_skip_busy_endpoints_and_share_ties() {
        let upstream = Upstream::new(UpstreamKey {
            namespace: "default".into(),
            service: "web".into(),
            port: ServicePort::Number(80),
            cluster_ip: None,
        });
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        upstream.publish(EndpointSet::ready([a, b])).await;
        let ties: BTreeSet<SocketAddr> = (0..4)
            .filter_map(|_| upstream.pick_least_loaded(&[]))
            .collect();
        assert_eq!(ties.len(), 2, "ties are shared");
        let busy = upstream.enter(a).unwrap();
        for _ in 0..4 {
            assert_eq!(upstream.pick_least_loaded(&[]), Some(b));
        }
        assert_eq!(
            upstream.pick_least_loaded(&[b]),
            Some(a),
            "the tried one is skipped"
        );
        drop(busy);
        let after: BTreeSet<SocketAddr> = (0..4)
            .filter_map(|_| upstream.pick_least_loaded(&[]))
            .collect();
        assert_eq!(after.len(), 2, "released");
    }
}
