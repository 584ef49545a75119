//! What every Kubernetes-facing part shares: the API client, the watch
//! back-off, [`follow`] (a reflector store kept current by a task) and the
//! Lease elector ([`lease`]). Discovery (EndpointSlices), the Ingress
//! controller, the Gateway API controller and their status writers use these.
//!
//! (The crate `kube` is kube-rs; this module is ours: inside it the crate is
//! written `::kube`.)

pub mod lease;

use ::kube::api::{ApiResource, DynamicObject};
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::utils::Backoff;
use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::{Api, Client, Resource};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The API client, from kube-rs's usual inference: in-cluster service
/// account, else `KUBECONFIG` / `~/.kube/config`.
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "discovery: kubernetes needs an API server: in a pod, a service account; \
             outside, KUBECONFIG or ~/.kube/config ({e})"
        )
    })
}

/// The proxy's own namespace: `POD_NAMESPACE` (the downward API), else the
/// client's default. Where the status Lease and the proxy's pods are.
pub fn own_namespace(client: &Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// A reflector store for `api`, kept current by a task; `changed` is
/// notified after every event past the initial list.
pub fn follow<K: Watched>(api: Api<K>, config: watcher::Config, changed: &Arc<Notify>) -> Store<K> {
    let (reader, writer) = reflector::store();
    spawn_watch(
        api,
        config,
        writer,
        changed.clone(),
        K::kind(&()).to_string(),
    );
    reader
}

/// As [`follow`], untyped: one watcher's code serves every kind followed
/// this way (a typed watcher costs the binary a few hundred KiB per kind).
/// The objects are read into their own types where they are used.
pub fn follow_dynamic(
    api: Api<DynamicObject>,
    resource: &ApiResource,
    config: watcher::Config,
    changed: &Arc<Notify>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let reader = writer.as_reader();
    spawn_watch(api, config, writer, changed.clone(), resource.kind.clone());
    reader
}

/// The task behind a store: watch, reflect, notify, back off on errors.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    kind: String,
) -> AbortHandle
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let task = tokio::spawn(async move {
        let events = watcher::watcher(api, config)
            .backoff(CatchUpBackoff::default())
            .reflect(writer);
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!("{kind} watch error, retrying with backoff: {e}"),
            }
        }
    });
    task.abort_handle()
}

/// What [`follow`] can watch.
pub trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Watches of single objects by name (a `metadata.name` field selector in
/// their namespace): the Secrets, ConfigMaps and Services that annotations
/// name. Reading only those keeps memory to what is used, where a watch of
/// every Secret would hold every token and Helm release of the cluster. One
/// untyped watch (`DynamicObject`) serves every kind: a typed watcher per
/// kind costs the binary a few hundred KiB each.
pub struct Named {
    client: Client,
    changed: Arc<Notify>,
    resource: ApiResource,
    watches: BTreeMap<(String, String), (Store<DynamicObject>, AbortHandle)>,
}

impl Named {
    /// Named objects of the kind `K`.
    pub fn new<K: Resource<DynamicType = ()>>(client: Client, changed: Arc<Notify>) -> Self {
        Named {
            client,
            changed,
            resource: ApiResource::erase::<K>(&()),
            watches: BTreeMap::new(),
        }
    }

    /// Follow exactly `wanted` (namespace, name): new names get a watch, the
    /// names no longer wanted lose theirs. Returns whether any watch started.
    pub fn follow_only(&mut self, wanted: &BTreeSet<(String, String)>) -> bool {
        self.watches.retain(|key, (_, task)| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut started = false;
        for key in wanted {
            if self.watches.contains_key(key) {
                continue;
            }
            let (namespace, name) = key;
            let api = Api::<DynamicObject>::namespaced_with(
                self.client.clone(),
                namespace,
                &self.resource,
            );
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let writer = reflector::store::Writer::new(self.resource.clone());
            let reader = writer.as_reader();
            let kind = self.resource.kind.clone();
            let task = spawn_watch(api, config, writer, self.changed.clone(), kind);
            self.watches.insert(key.clone(), (reader, task));
            started = true;
        }
        started
    }

    /// Wait (at most `limit`) until every watch has its first list: an object
    /// that exists is then known, and a missing one is known to be missing.
    pub async fn wait_listed(&self, limit: Duration) -> bool {
        let all =
            futures::future::join_all(self.watches.values().map(|(s, _)| s.wait_until_ready()));
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// The objects found, by (namespace, name).
    pub fn objects(&self) -> HashMap<(String, String), Arc<DynamicObject>> {
        self.watches
            .iter()
            .filter_map(|(key, (store, _))| Some((key.clone(), store.state().into_iter().next()?)))
            .collect()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        for (_, task) in self.watches.values() {
            task.abort();
        }
    }
}

/// Watch errors back off from 250 ms, doubling, to at most 2 s, each delay
/// drawn from its upper half: after an API server outage a change reaches
/// routing within about 3 s, and 1 000 nodes reconnecting spread over those
/// 2 s rather than arriving at once.
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

#[cfg(test)]
mod tests {
    use super::*;

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
