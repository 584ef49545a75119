//! What every Kubernetes-facing part shares: the API client, the watch
//! back-off, [`follow`] (a reflector store kept current by a task) and the
//! Lease elector ([`lease`]). Discovery (EndpointSlices), the Ingress
//! controller and its status writer use these; so will Gateway API.
//!
//! (The crate `kube` is kube-rs; this module is ours: inside it the crate is
//! written `::kube`.)

pub mod lease;

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

/// A reflector store for `api`, kept current by a task; `changed` is
/// notified after every event past the initial list.
pub fn follow<K: Watched>(api: Api<K>, config: watcher::Config, changed: &Arc<Notify>) -> Store<K> {
    follow_task(api, config, changed).0
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

/// [`follow`], with the handle that stops the watch.
fn follow_task<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
) -> (Store<K>, AbortHandle) {
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let kind = K::kind(&()).to_string();
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
    (reader, task.abort_handle())
}

/// Watches of single objects by name (a `metadata.name` field selector in
/// their namespace): the Secrets, ConfigMaps and Services that annotations
/// name. Reading only those keeps memory to what is used, where a watch of
/// every Secret would hold every token and Helm release of the cluster.
pub struct Named<K: Watched> {
    client: Client,
    changed: Arc<Notify>,
    watches: BTreeMap<(String, String), (Store<K>, AbortHandle)>,
}

impl<K: Watched> Named<K>
where
    K: Resource<Scope = ::kube::core::NamespaceResourceScope>,
{
    pub fn new(client: Client, changed: Arc<Notify>) -> Self {
        Named {
            client,
            changed,
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
            let api = Api::<K>::namespaced(self.client.clone(), namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            self.watches
                .insert(key.clone(), follow_task(api, config, &self.changed));
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
    pub fn objects(&self) -> HashMap<(String, String), Arc<K>> {
        self.watches
            .iter()
            .filter_map(|(key, (store, _))| Some((key.clone(), store.state().into_iter().next()?)))
            .collect()
    }
}

impl<K: Watched> Drop for Named<K> {
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
