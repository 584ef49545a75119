//! `discovery: kubernetes`: watch the EndpointSlices of each routed Service.
//!
//! One kube-rs `watcher` + `reflector` per upstream (namespace, Service, port),
//! selected by the label `kubernetes.io/service-name`. The reflector's store
//! swaps in a relisted state only when the relist is complete (after a 410 Gone,
//! say), so the last good endpoint set keeps serving meanwhile; watch errors
//! back off and retry. Every change republishes the upstream's endpoints:
//! - `ready` endpoints take new sessions;
//! - `serving` and `terminating` ones only finish the sessions pinned to them;
//! - anything else is dropped, and its pinned clients fail over.
//!
//! The client comes from kube-rs's usual inference: in-cluster service account,
//! else `KUBECONFIG` / `~/.kube/config`.

use super::backend;
use crate::config::{ServicePort, UpstreamKey};
use crate::metrics::METRICS;
use crate::upstream::{AbortOnDrop, Upstream};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long a new upstream waits for its first list before it is published.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(5);

/// The endpoints of one upstream, as the slices describe them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    pub ready: BTreeSet<SocketAddr>,
    pub serving_terminating: BTreeSet<SocketAddr>,
}

static CLIENT: OnceCell<Client> = OnceCell::const_new();

async fn client() -> anyhow::Result<Client> {
    CLIENT
        .get_or_try_init(|| async {
            Client::try_default().await.map_err(|e| {
                anyhow::anyhow!(
                    "discovery: kubernetes needs an API server: in a pod, a service account; \
                     outside, KUBECONFIG or ~/.kube/config ({e})"
                )
            })
        })
        .await
        .cloned()
}

/// Start watching `key`'s slices; returns once synced or after a short wait.
pub async fn start(key: &UpstreamKey) -> anyhow::Result<Arc<Upstream>> {
    let client = client().await?;
    let current = Arc::new(ArcSwap::from_pointee(EndpointSet::default()));
    let upstream = Arc::new(Upstream::new(
        key.clone(),
        Box::new(SliceDiscovery {
            current: current.clone(),
        }),
    ));
    let api: Api<EndpointSlice> = Api::namespaced(client, &key.namespace);
    let task = tokio::spawn(watch(api, key.clone(), current, Arc::downgrade(&upstream)));
    upstream.attach_task(AbortOnDrop(task.abort_handle()));

    let deadline = tokio::time::Instant::now() + FIRST_SYNC_WAIT;
    while !upstream.is_synced() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !upstream.is_synced() {
        tracing::warn!(service = %key, "no endpoint list yet; serving 503 for it until the watch syncs");
    }
    Ok(upstream)
}

async fn watch(
    api: Api<EndpointSlice>,
    key: UpstreamKey,
    current: Arc<ArcSwap<EndpointSet>>,
    upstream: Weak<Upstream>,
) {
    let (reader, writer) = reflector::store();
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", key.service));
    let mut events = std::pin::pin!(watcher::watcher(api, config)
        .default_backoff()
        .reflect(writer));
    let service = key.to_string();
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Err(e) => {
                METRICS
                    .discovery_errors
                    .with_label_values(&[&service])
                    .inc();
                tracing::warn!(
                    service,
                    "EndpointSlice watch error, retrying with backoff: {e}"
                );
                continue;
            }
            // A (re)list in progress: the store still holds the last good state.
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Ok(Event::InitDone) => listed = true,
            Ok(Event::Apply(_) | Event::Delete(_)) if !listed => continue,
            Ok(Event::Apply(_) | Event::Delete(_)) => {}
        }
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        publish(&reader, &key, &current, &upstream).await;
        upstream.set_synced();
    }
}

async fn publish(
    reader: &Store<EndpointSlice>,
    key: &UpstreamKey,
    current: &ArcSwap<EndpointSet>,
    upstream: &Upstream,
) {
    let slices = reader.state();
    let next = endpoints_from_slices(slices.iter().map(|s| s.as_ref()), &key.port);
    if **current.load() == next {
        return;
    }
    tracing::info!(
        service = %key,
        ready = next.ready.len(),
        serving_terminating = next.serving_terminating.len(),
        "endpoints changed"
    );
    current.store(Arc::new(next));
    if let Err(e) = upstream.refresh().await {
        tracing::error!(service = %key, "cannot apply endpoints: {e}");
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

/// The pingora side: the current set, with serving-but-terminating endpoints
/// present (pinnable) but disabled (no new sessions).
struct SliceDiscovery {
    current: Arc<ArcSwap<EndpointSet>>,
}

#[async_trait]
impl ServiceDiscovery for SliceDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let set = self.current.load();
        let mut backends = BTreeSet::new();
        let mut enablement = HashMap::new();
        for addr in &set.ready {
            backends.insert(backend(*addr));
        }
        for addr in &set.serving_terminating {
            let b = backend(*addr);
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

    #[tokio::test]
    async fn terminating_endpoints_are_pinnable_but_not_ready() {
        let current = Arc::new(ArcSwap::from_pointee(EndpointSet {
            ready: addrs(&["10.0.0.1:80"]),
            serving_terminating: addrs(&["10.0.0.2:80"]),
        }));
        let key = UpstreamKey {
            namespace: "default".into(),
            service: "web".into(),
            port: ServicePort::Number(80),
        };
        let upstream = Upstream::new(key, Box::new(SliceDiscovery { current }));
        upstream.refresh().await.unwrap();
        let draining: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(
            upstream.pinned(upstream.endpoint_id(&draining)),
            Some(draining)
        );
        for _ in 0..10 {
            assert_eq!(upstream.pick(&[]), Some("10.0.0.1:80".parse().unwrap()));
        }
        assert_eq!(upstream.endpoint_counts(), (1, 1));
    }
}
