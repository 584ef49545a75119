//! `discovery: kubernetes`: one EndpointSlice watch for the whole proxy.
//!
//! One kube-rs `watcher` + `reflector` over every namespace, selecting the
//! slices of the routed Services by name (`kubernetes.io/service-name in
//! (a,b,…)`); each upstream (namespace, Service, port) takes its endpoints from
//! the store. When the set of routed Service names changes (a reload), the watch
//! is re-scoped: a new LIST and WATCH with the new selector, while every
//! upstream keeps serving its last set until the new list is complete. The
//! reflector swaps in a relisted state only when the relist is complete (after
//! a 410 Gone, say), so the last good set serves meanwhile too. Endpoints:
//! - `ready` endpoints take new sessions;
//! - `serving` and `terminating` ones only finish the sessions pinned to them;
//! - anything else is dropped, and its pinned clients fail over.
//!
//! Errors back off from 250 ms, doubling, to at most 2 s, jittered: after an
//! API server outage a change reaches routing within about 3 s, and 1 000 nodes
//! reconnecting spread over those 2 s rather than arriving at once.
//!
//! The client comes from kube-rs's usual inference: in-cluster service account,
//! else `KUBECONFIG` / `~/.kube/config`.

use crate::config::{ServicePort, UpstreamKey};
use crate::metrics::METRICS;
pub use crate::upstream::EndpointSet;
use crate::upstream::Upstream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell};

const SERVICE_LABEL: &str = "kubernetes.io/service-name";

static WATCH: OnceCell<Arc<SliceWatch>> = OnceCell::const_new();

/// The proxy's one watch and the upstreams it feeds.
pub struct SliceWatch {
    upstreams: Mutex<Vec<Weak<Upstream>>>,
    /// An upstream came or went: maybe a new selector, maybe one to fill.
    changed: Notify,
}

/// Held by an upstream; its drop tells the watch to look again.
struct Registration(Arc<SliceWatch>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.changed.notify_one();
    }
}

pub async fn client() -> anyhow::Result<Client> {
    Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "discovery: kubernetes needs an API server: in a pod, a service account; \
             outside, KUBECONFIG or ~/.kube/config ({e})"
        )
    })
}

/// A new upstream fed by the proxy's watch (started on first use). Returns at
/// once; the upstream is synced when the watch's list covering it is complete.
pub async fn start(key: &UpstreamKey) -> anyhow::Result<Arc<Upstream>> {
    let watch = WATCH
        .get_or_try_init(|| async {
            let client = client().await?;
            let watch = Arc::new(SliceWatch {
                upstreams: Mutex::new(Vec::new()),
                changed: Notify::new(),
            });
            tokio::spawn(run(Api::all(client), watch.clone()));
            anyhow::Ok(watch)
        })
        .await?
        .clone();
    let upstream = Arc::new(Upstream::new(key.clone()));
    watch.lock().push(Arc::downgrade(&upstream));
    upstream.attach(Box::new(Registration(watch.clone())));
    watch.changed.notify_one();
    Ok(upstream)
}

impl SliceWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Upstream>>> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live upstreams (the dead are forgotten).
    fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut list = self.lock();
        list.retain(|u| u.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// The label selector for the routed Services, sorted: `None` when none.
    fn selector(&self) -> Option<String> {
        let names: BTreeSet<String> = self
            .upstreams()
            .iter()
            .map(|u| u.key.service.clone())
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        (!names.is_empty()).then(|| format!("{SERVICE_LABEL} in ({})", names.join(",")))
    }

    /// Every upstream's endpoints from the store.
    async fn publish_all(&self, store: &Store<EndpointSlice>) {
        let slices = store.state();
        for upstream in self.upstreams() {
            let key = &upstream.key;
            let own = slices.iter().filter(|s| {
                s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_LABEL))
                        == Some(&key.service)
            });
            upstream
                .publish(endpoints_from_slices(own.map(|s| s.as_ref()), &key.port))
                .await;
        }
    }

    fn count_error(&self) {
        for upstream in self.upstreams() {
            METRICS
                .discovery_errors
                .with_label_values(&[&upstream.key.to_string()])
                .inc();
        }
    }
}

/// The watch, for the life of the process: one stream per selector.
async fn run(api: Api<EndpointSlice>, watch: Arc<SliceWatch>) {
    loop {
        let Some(selector) = watch.selector() else {
            METRICS.discovery_watches.set(0);
            watch.changed.notified().await;
            continue;
        };
        tracing::info!(selector, "watching EndpointSlices");
        let (reader, writer) = reflector::store();
        let events = watcher::watcher(api.clone(), watcher::Config::default().labels(&selector))
            .backoff(CatchUpBackoff::default())
            .reflect(writer);
        METRICS.discovery_watches.set(1);
        follow(events, &reader, &watch, &selector).await;
    }
}

/// Apply one stream's events until it ends or the selector must change.
/// Upstreams are published only from a complete list (after `InitDone`), so a
/// relist or a re-scope never shows them a partial state.
pub async fn follow(
    events: impl Stream<Item = Result<Event<EndpointSlice>, watcher::Error>>,
    reader: &Store<EndpointSlice>,
    watch: &SliceWatch,
    selector: &str,
) {
    let mut events = std::pin::pin!(events);
    let mut listed = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    watch.count_error();
                    tracing::warn!("EndpointSlice watch error, retrying with backoff: {e}");
                }
                // A (re)list in progress: the store still holds the last good state.
                Some(Ok(Event::Init | Event::InitApply(_))) => {}
                Some(Ok(Event::InitDone)) => {
                    listed = true;
                    watch.publish_all(reader).await;
                }
                Some(Ok(Event::Apply(_) | Event::Delete(_))) => {
                    if listed {
                        watch.publish_all(reader).await;
                    }
                }
            },
            () = watch.changed.notified() => {
                if watch.selector().as_deref() != Some(selector) {
                    return;
                }
                // A new upstream of a Service already watched: fill it now.
                if listed {
                    watch.publish_all(reader).await;
                }
            }
        }
    }
}

/// 250 ms, doubling, at most 2 s, each delay drawn from its upper half.
#[derive(Default)]
pub struct CatchUpBackoff {
    failures: u32,
}

impl Iterator for CatchUpBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = Duration::from_millis(250) * 2u32.pow(self.failures.min(3));
        self.failures += 1;
        // uuid's thread-local generator: no new dependency for a little jitter.
        let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
        Some(base.mul_f64(0.5 + jitter / 2.0).min(Duration::from_secs(2)))
    }
}

impl Backoff for CatchUpBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The endpoints of `port` across a Service's slices.
pub fn endpoints_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: &ServicePort,
) -> EndpointSet {
    let mut set = EndpointSet::default();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(target_port) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let c = endpoint.conditions.as_ref();
            // API semantics: an unknown `ready` or `serving` counts as true,
            // an unknown `terminating` as false.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let bucket = if ready && !terminating {
                &mut set.ready
            } else if serving && terminating {
                &mut set.serving_terminating
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    bucket.insert(SocketAddr::new(ip, target_port));
                }
            }
        }
    }
    // An address in two slices (mid-move) counts as ready if either says so.
    set.serving_terminating = set
        .serving_terminating
        .difference(&set.ready)
        .copied()
        .collect();
    set
}

/// The slice's port for the route's Service port. Slice ports carry the
/// Service port's *name* and the pod's *target* port number, so: a named port
/// matches by name; a number matches a slice port of that number, else the
/// slice's only port (the usual single-port Service whose targetPort differs).
fn slice_port(slice: &EndpointSlice, port: &ServicePort) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let found = match port {
        ServicePort::Name(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str())),
        ServicePort::Number(n) => ports
            .iter()
            .find(|p| p.port == Some(i32::from(*n)))
            .or_else(|| (ports.len() == 1).then(|| &ports[0])),
    };
    found
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    /// (address, ready, serving, terminating)
    type TestEndpoint<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    fn slice(ports: &[(&str, i32)], endpoints: &[TestEndpoint]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some(name.to_string()),
                        port: Some(*port),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready, serving, terminating)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *serving,
                        terminating: *terminating,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn ready_terminating_and_gone_endpoints() {
        let s = slice(
            &[("http", 8080)],
            &[
                ("10.0.0.1", Some(true), Some(true), Some(false)),
                ("10.0.0.2", Some(false), Some(true), Some(true)), // draining
                ("10.0.0.3", Some(false), Some(false), Some(true)), // stopped serving
                ("10.0.0.4", Some(false), Some(false), Some(false)), // not ready yet
                ("10.0.0.5", None, None, None),                    // unknown: ready
            ],
        );
        let set = endpoints_from_slices([&s], &ServicePort::Number(80));
        assert_eq!(set.ready, addrs(&["10.0.0.1:8080", "10.0.0.5:8080"]));
        assert_eq!(set.serving_terminating, addrs(&["10.0.0.2:8080"]));
    }

    #[test]
    fn ports_match_by_name_or_number_across_slices() {
        let a = slice(
            &[("http", 8080), ("metrics", 9090)],
            &[("10.0.0.1", Some(true), None, None)],
        );
        let b = slice(
            &[("http", 8080), ("metrics", 9090)],
            &[("10.0.0.2", Some(true), None, None)],
        );
        let by_name = endpoints_from_slices([&a, &b], &ServicePort::Name("metrics".into()));
        assert_eq!(by_name.ready, addrs(&["10.0.0.1:9090", "10.0.0.2:9090"]));
        let by_number = endpoints_from_slices([&a, &b], &ServicePort::Number(8080));
        assert_eq!(by_number.ready, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
        // Two ports and no match: nothing rather than a guess.
        assert!(endpoints_from_slices([&a], &ServicePort::Number(80))
            .ready
            .is_empty());
        assert!(
            endpoints_from_slices([&a], &ServicePort::Name("grpc".into()))
                .ready
                .is_empty()
        );
    }

    #[test]
    fn an_address_ready_in_one_slice_is_ready() {
        let a = slice(
            &[("http", 80)],
            &[("10.0.0.1", Some(true), Some(true), Some(false))],
        );
        let b = slice(
            &[("http", 80)],
            &[("10.0.0.1", Some(false), Some(true), Some(true))],
        );
        let set = endpoints_from_slices([&a, &b], &ServicePort::Number(80));
        assert_eq!(set.ready, addrs(&["10.0.0.1:80"]));
        assert!(set.serving_terminating.is_empty());
    }

    /// A slice of Service `web` in `namespace`, one ready endpoint on 8080.
    fn web_slice(namespace: &str, name: &str, ip: &str) -> EndpointSlice {
        let mut s = slice(&[("http", 8080)], &[(ip, Some(true), None, None)]);
        s.metadata.namespace = Some(namespace.into());
        s.metadata.name = Some(name.into());
        s.metadata.labels = Some([(SERVICE_LABEL.to_string(), "web".to_string())].into());
        s
    }

    fn watched(namespaces: &[&str]) -> (SliceWatch, Vec<Arc<Upstream>>) {
        let upstreams: Vec<Arc<Upstream>> = namespaces
            .iter()
            .map(|ns| {
                Arc::new(Upstream::new(UpstreamKey {
                    namespace: ns.to_string(),
                    service: "web".into(),
                    port: ServicePort::Number(80),
                }))
            })
            .collect();
        let watch = SliceWatch {
            upstreams: Mutex::new(upstreams.iter().map(Arc::downgrade).collect()),
            changed: Notify::new(),
        };
        (watch, upstreams)
    }

    fn ready_of(upstream: &Upstream) -> BTreeSet<SocketAddr> {
        let (ready, _) = upstream.endpoint_counts();
        (0..ready * 2).filter_map(|_| upstream.pick(&[])).collect()
    }

    const SELECTOR: &str = "kubernetes.io/service-name in (web)";

    #[tokio::test]
    async fn a_list_in_progress_publishes_nothing() {
        let (watch, upstreams) = watched(&["default"]);
        let (reader, writer) = reflector::store();
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(web_slice("default", "web-1", "10.0.0.1"))),
            Err(watcher::Error::NoResourceVersion),
        ])
        .reflect(writer);
        follow(events, &reader, &watch, SELECTOR).await;
        assert!(!upstreams[0].is_synced());
        assert_eq!(upstreams[0].endpoint_counts(), (0, 0));
    }

    #[tokio::test]
    async fn one_watch_feeds_each_upstream_its_own_namespace_and_follows_changes() {
        let (watch, upstreams) = watched(&["default", "shop"]);
        let (reader, writer) = reflector::store();
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(web_slice("default", "web-1", "10.0.0.1"))),
            Ok(Event::InitApply(web_slice("shop", "web-1", "10.0.1.1"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(web_slice("default", "web-2", "10.0.0.2"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Delete(web_slice("shop", "web-1", "10.0.1.1"))),
        ])
        .reflect(writer);
        follow(events, &reader, &watch, SELECTOR).await;
        assert_eq!(
            ready_of(&upstreams[0]),
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
        // Synced, and empty once its only slice was deleted: 503, not "unknown".
        assert!(upstreams[1].is_synced());
        assert_eq!(upstreams[1].endpoint_counts(), (0, 0));
    }

    #[tokio::test]
    async fn the_selector_names_each_routed_service_once_and_forgets_dropped_ones() {
        let (watch, mut upstreams) = watched(&["default", "shop"]);
        assert_eq!(watch.selector().as_deref(), Some(SELECTOR));
        upstreams.clear();
        assert_eq!(watch.selector(), None);
    }

    #[test]
    fn the_backoff_is_bounded_jittered_and_resets() {
        let mut b = CatchUpBackoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] >= Duration::from_millis(125) && delays[0] <= Duration::from_millis(250));
        assert!(delays
            .iter()
            .all(|d| *d <= Duration::from_secs(2) && *d >= Duration::from_millis(125)));
        assert!(delays[7] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(250));
    }
}
