//! `discovery: kubernetes`: one EndpointSlice watch for the whole proxy.
//!
//! One kube-rs `watcher` over every namespace, selecting the slices of the
//! routed Services by name (`kubernetes.io/service-name in (a,b,…)`), into an
//! index of slices by (namespace, Service). A slice's change re-publishes only
//! the upstreams of its own Service: its cost does not grow with the number of
//! Services (bench/scale.rs). When the set of routed Service names changes (a
//! reload), the watch is re-scoped: a new LIST and WATCH with the new selector,
//! while every upstream keeps serving its last set until the new list is
//! complete. A relist (after a 410 Gone, say) is collected apart and swapped
//! in only when complete, so the last good set serves meanwhile too. Endpoints:
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

use crate::metrics::METRICS;
use crate::route::{ServicePort, UpstreamKey};
pub use crate::upstream::EndpointSet;
use crate::upstream::Upstream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{Notify, OnceCell};

const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// The longest selector by name sent (8 KiB, about 800 Service names).
const MAX_SELECTOR_BYTES: usize = 8 * 1024;

static WATCH: OnceCell<Arc<SliceWatch>> = OnceCell::const_new();

/// A Service: (namespace, name).
type ServiceKey = (String, String);

/// The slices of the watched Services, by Service, then by slice name.
type SliceIndex = HashMap<ServiceKey, BTreeMap<String, EndpointSlice>>;

fn service_of(slice: &EndpointSlice) -> ServiceKey {
    let m = &slice.metadata;
    let service = m.labels.as_ref().and_then(|l| l.get(SERVICE_LABEL));
    (
        m.namespace.clone().unwrap_or_default(),
        service.cloned().unwrap_or_default(),
    )
}

/// The proxy's one watch and the upstreams it feeds.
pub struct SliceWatch {
    /// The upstreams fed, by their Service (several ports may share one).
    upstreams: Mutex<HashMap<ServiceKey, Vec<Weak<Upstream>>>>,
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

/// A new upstream fed by the proxy's watch (started on first use). Returns at
/// once; the upstream is synced when the watch's list covering it is complete.
pub async fn start(key: &UpstreamKey) -> anyhow::Result<Arc<Upstream>> {
    let watch = WATCH
        .get_or_try_init(|| async {
            let client = crate::kube::client().await?;
            let watch = Arc::new(SliceWatch::default());
            tokio::spawn(run(Api::all(client), watch.clone()));
            anyhow::Ok(watch)
        })
        .await?
        .clone();
    let upstream = Arc::new(Upstream::new(key.clone()));
    watch
        .lock()
        .entry((key.namespace.clone(), key.service.clone()))
        .or_default()
        .push(Arc::downgrade(&upstream));
    upstream.attach(Box::new(Registration(watch.clone())));
    watch.changed.notify_one();
    Ok(upstream)
}

impl Default for SliceWatch {
    fn default() -> Self {
        SliceWatch {
            upstreams: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }
}

impl SliceWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, Vec<Weak<Upstream>>>> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live upstreams of one Service.
    fn upstreams_of(&self, service: &ServiceKey) -> Vec<Arc<Upstream>> {
        let list = self.lock();
        list.get(service)
            .map(|l| l.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// The Services with live upstreams (the dead are forgotten).
    fn services(&self) -> Vec<ServiceKey> {
        let mut list = self.lock();
        list.retain(|_, upstreams| {
            upstreams.retain(|u| u.strong_count() > 0);
            !upstreams.is_empty()
        });
        list.keys().cloned().collect()
    }

    /// The label selector for the routed Services, sorted: `None` when none.
    /// Past [`MAX_SELECTOR_BYTES`] every Service's slices are watched instead
    /// (and indexed; only routed Services are published): a request URI holds
    /// at most 64 KiB (the `http` crate's limit), and ~6 000 Service names
    /// would not fit; nor would proxies or API servers in between like it.
    fn selector(&self) -> Option<String> {
        let names: BTreeSet<String> = self.services().into_iter().map(|(_, s)| s).collect();
        let names: Vec<String> = names.into_iter().collect();
        let selector = format!("{SERVICE_LABEL} in ({})", names.join(","));
        match names.len() {
            0 => None,
            _ if selector.len() > MAX_SELECTOR_BYTES => Some(SERVICE_LABEL.to_string()),
            _ => Some(selector),
        }
    }

    /// One Service's upstreams, from its slices in the index.
    async fn publish(&self, index: &SliceIndex, service: &ServiceKey) {
        let slices = index.get(service);
        for upstream in self.upstreams_of(service) {
            let own = slices.into_iter().flat_map(|s| s.values());
            upstream
                .publish(endpoints_from_slices(own, &upstream.key.port))
                .await;
        }
    }

    /// Every Service's upstreams (after a complete list, or a new upstream).
    async fn publish_all(&self, index: &SliceIndex) {
        for service in self.services() {
            self.publish(index, &service).await;
        }
    }

    fn count_error(&self) {
        for (namespace, service) in self.services() {
            for upstream in self.upstreams_of(&(namespace, service)) {
                METRICS
                    .discovery_errors
                    .with_label_values(&[&upstream.key.to_string()])
                    .inc();
            }
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
        let events = watcher::watcher(api.clone(), watcher::Config::default().labels(&selector))
            .backoff(crate::kube::CatchUpBackoff::default());
        METRICS.discovery_watches.set(1);
        follow(events, &watch, &selector).await;
    }
}

/// Apply one stream's events until it ends or the selector must change.
/// Upstreams are published only from a complete list (after `InitDone`), so a
/// relist or a re-scope never shows them a partial state; after it, each
/// change re-publishes its own Service only.
pub async fn follow(
    events: impl Stream<Item = Result<Event<EndpointSlice>, watcher::Error>>,
    watch: &SliceWatch,
    selector: &str,
) {
    let mut events = std::pin::pin!(events);
    let mut index = SliceIndex::new();
    // A (re)list in progress, collected apart from the index that serves.
    let mut relist: Option<SliceIndex> = None;
    let mut listed = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    watch.count_error();
                    tracing::warn!("EndpointSlice watch error, retrying with backoff: {e}");
                }
                Some(Ok(Event::Init)) => relist = Some(SliceIndex::new()),
                Some(Ok(Event::InitApply(slice))) => {
                    if let Some(relist) = &mut relist {
                        insert(relist, slice);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    index = relist.take().unwrap_or_default();
                    listed = true;
                    watch.publish_all(&index).await;
                }
                Some(Ok(Event::Apply(slice))) => {
                    let service = insert(&mut index, slice);
                    if listed {
                        watch.publish(&index, &service).await;
                    }
                }
                Some(Ok(Event::Delete(slice))) => {
                    let service = service_of(&slice);
                    if let Some(slices) = index.get_mut(&service) {
                        slices.remove(slice.metadata.name.as_deref().unwrap_or_default());
                        if slices.is_empty() {
                            index.remove(&service);
                        }
                    }
                    if listed {
                        watch.publish(&index, &service).await;
                    }
                }
            },
            () = watch.changed.notified() => {
                if watch.selector().as_deref() != Some(selector) {
                    return;
                }
                // A new upstream of a Service already watched: fill it now.
                if listed {
                    watch.publish_all(&index).await;
                }
            }
        }
    }
}

/// Add or replace a slice in the index; returns its Service.
fn insert(index: &mut SliceIndex, slice: EndpointSlice) -> ServiceKey {
    let service = service_of(&slice);
    let name = slice.metadata.name.clone().unwrap_or_default();
    index
        .entry(service.clone())
        .or_default()
        .insert(name, slice);
    service
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
                    cluster_ip: None,
                }))
            })
            .collect();
        let watch = SliceWatch::default();
        for u in &upstreams {
            let key = (u.key.namespace.clone(), u.key.service.clone());
            watch.lock().entry(key).or_default().push(Arc::downgrade(u));
        }
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
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(web_slice("default", "web-1", "10.0.0.1"))),
            Err(watcher::Error::NoResourceVersion),
        ]);
        follow(events, &watch, SELECTOR).await;
        assert!(!upstreams[0].is_synced());
        assert_eq!(upstreams[0].endpoint_counts(), (0, 0));
    }

    #[tokio::test]
    async fn one_watch_feeds_each_upstream_its_own_namespace_and_follows_changes() {
        let (watch, upstreams) = watched(&["default", "shop"]);
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(web_slice("default", "web-1", "10.0.0.1"))),
            Ok(Event::InitApply(web_slice("shop", "web-1", "10.0.1.1"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(web_slice("default", "web-2", "10.0.0.2"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Delete(web_slice("shop", "web-1", "10.0.1.1"))),
            // A relist in progress changes nothing until it is complete.
            Ok(Event::Init),
            Ok(Event::InitApply(web_slice("default", "web-3", "10.0.0.3"))),
        ]);
        follow(events, &watch, SELECTOR).await;
        assert_eq!(
            ready_of(&upstreams[0]),
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
        // Synced, and empty once its only slice was deleted: 503, not "unknown".
        assert!(upstreams[1].is_synced());
        assert_eq!(upstreams[1].endpoint_counts(), (0, 0));
    }

    #[test]
    fn past_a_few_hundred_services_every_services_slices_are_watched() {
        let watch = SliceWatch::default();
        let upstreams: Vec<Arc<Upstream>> = (0..2_000)
            .map(|i| {
                Arc::new(Upstream::new(UpstreamKey {
                    namespace: "default".into(),
                    service: format!("service-{i}"),
                    port: ServicePort::Number(80),
                    cluster_ip: None,
                }))
            })
            .collect();
        for u in &upstreams[..10] {
            let key = (u.key.namespace.clone(), u.key.service.clone());
            watch.lock().entry(key).or_default().push(Arc::downgrade(u));
        }
        assert!(watch
            .selector()
            .unwrap()
            .starts_with("kubernetes.io/service-name in (service-0,"));
        for u in &upstreams {
            let key = (u.key.namespace.clone(), u.key.service.clone());
            watch.lock().entry(key).or_default().push(Arc::downgrade(u));
        }
        assert_eq!(
            watch.selector().as_deref(),
            Some("kubernetes.io/service-name")
        );
    }

    #[tokio::test]
    async fn the_selector_names_each_routed_service_once_and_forgets_dropped_ones() {
        let (watch, mut upstreams) = watched(&["default", "shop"]);
        assert_eq!(watch.selector().as_deref(), Some(SELECTOR));
        upstreams.clear();
        assert_eq!(watch.selector(), None);
    }
}
