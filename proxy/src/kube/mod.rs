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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
pub fn follow<K>(api: Api<K>, config: watcher::Config, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let kind = K::kind(&()).to_string();
    tokio::spawn(async move {
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
    reader
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
