//! `status.loadBalancer.ingress` of the served Ingresses: the addresses clients
//! should use, for `kubectl get ingress` and ExternalDNS.
//!
//! One proxy writes at a time: the holder of a `coordination.k8s.io` Lease in
//! the proxy's namespace, taken and renewed as client-go's leader election
//! does (expiry judged by when *we* saw the holder's last renewal, so clocks
//! need not agree). A proxy that shuts down releases the Lease, and another
//! takes over at its next try (2 s); one that dies is replaced once the Lease
//! expires (15 s).
//!
//! The addresses: `publish_addresses` when set; else one per Node running a
//! Ready pod of `publish_selector` (its ExternalIP, else its InternalIP),
//! sorted. Against flapping, a new list is written only once it has held for
//! [`SETTLE`] (a rolling update of the DaemonSet takes a node out for seconds),
//! an empty list is never written (the last one stays), and an Ingress whose
//! status already says it is not written again.

use crate::config::IngressSettings;
use crate::metrics::METRICS;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, NotUsed, Object};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::{Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const LEASE_NAME: &str = "edge-proxy-status";
const LEASE_SECONDS: i32 = 15;
/// How often the holder renews and the others try.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long a new address list must hold before it is written.
const SETTLE: Duration = Duration::from_secs(4);

/// Set at shutdown: release the Lease; `RELEASED` says when that is done.
static STOPPING: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));
static RELEASED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Called from the shutdown path (a plain thread): hand the Lease over, so
/// another proxy keeps the status current, and wait up to `timeout` for it.
pub fn release_on_shutdown(timeout: Duration) {
    if STOPPING.receiver_count() == 0 {
        return; // no status writer runs
    }
    STOPPING.send_replace(true);
    let (lock, cvar) = &RELEASED;
    let done = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _ = cvar.wait_timeout_while(done, timeout, |done| !*done);
}

fn mark_released() {
    let (lock, cvar) = &RELEASED;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cvar.notify_all();
}

/// The status writer, for the life of the process. `served` holds the
/// Ingresses to keep current; `ingresses` their last known state.
pub async fn run(
    client: Client,
    settings: IngressSettings,
    served: watch::Receiver<Vec<(String, String)>>,
    ingresses: Store<Ingress>,
) {
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    // Outside a pod: host name and process id (two containers may both be pid 1).
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    let mut elector = Elector {
        api: Api::namespaced(client.clone(), &namespace),
        identity,
        observed: None,
        leader: false,
    };
    let mut writer = Writer {
        client,
        namespace,
        settings,
        pending: None,
        published: None,
    };
    let mut stopping = STOPPING.subscribe();
    tracing::info!(lease = %format!("{}/{LEASE_NAME}", writer.namespace), identity = %elector.identity, "Ingress status: contending for the Lease");
    loop {
        if *stopping.borrow() {
            elector.release().await;
            mark_released();
            return;
        }
        elector.try_lead().await;
        if elector.leader {
            let served = served.borrow().clone();
            writer.update(&served, &ingresses).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.changed() => {}
        }
    }
}

struct Elector {
    api: Api<Lease>,
    identity: String,
    /// The holder and renew time last seen, and when we saw them change.
    observed: Option<(String, Option<MicroTime>, Instant)>,
    leader: bool,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    async fn try_lead(&mut self) {
        let was = self.leader;
        match self.acquire_or_renew().await {
            Ok(leader) => self.leader = leader,
            Err(e) => {
                tracing::warn!("Ingress status Lease: {e}");
                // Without a renewal we cannot know we still hold it.
                self.leader = false;
            }
        }
        if self.leader != was {
            METRICS.ingress_status_leader.set(i64::from(self.leader));
            if self.leader {
                tracing::info!(identity = %self.identity, "Ingress status: this proxy holds the Lease and writes the status");
            } else {
                tracing::info!("Ingress status: another proxy holds the Lease");
            }
        }
    }

    async fn acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(self.spec(now(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.clone();
        let seen_at = match &self.observed {
            Some((h, r, at)) if *h == holder && *r == renewed => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((holder.clone(), renewed.clone(), at));
                at
            }
        };
        let duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1) as u64);
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.unwrap_or_else(now)
        } else {
            now()
        };
        lease.spec = Some(self.spec(acquired, transitions));
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(acquired),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Give the Lease up (an empty holder), as client-go's ReleaseOnCancel.
    async fn release(&mut self) {
        if !self.leader {
            return;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("Ingress status: Lease released for another proxy"),
            Err(e) => tracing::warn!("Ingress status: releasing the Lease: {e}"),
        }
        self.leader = false;
        METRICS.ingress_status_leader.set(0);
    }
}

/// One status entry: an IP address or a host name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address {
    Ip(String),
    Hostname(String),
}

impl Address {
    fn parse(text: &str) -> Address {
        match text.parse::<std::net::IpAddr>() {
            Ok(_) => Address::Ip(text.to_string()),
            Err(_) => Address::Hostname(text.to_string()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Address::Ip(ip) => serde_json::json!({ "ip": ip }),
            Address::Hostname(h) => serde_json::json!({ "hostname": h }),
        }
    }
}

struct Writer {
    client: Client,
    namespace: String,
    settings: IngressSettings,
    /// A list seen but not yet held for SETTLE, and since when.
    pending: Option<(Vec<Address>, Instant)>,
    /// The settled list being published.
    published: Option<Vec<Address>>,
}

impl Writer {
    async fn update(&mut self, served: &[(String, String)], ingresses: &Store<Ingress>) {
        match self.addresses().await {
            Ok(list) if list.is_empty() => {} // never publish "nowhere"
            Ok(list) => self.settle(list),
            Err(e) => tracing::warn!("Ingress status: cannot list the proxy's nodes: {e}"),
        }
        let Some(list) = self.published.clone() else {
            return;
        };
        let wanted: Vec<serde_json::Value> = list.iter().map(Address::to_json).collect();
        for (namespace, name) in served {
            let current = ingresses
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|i| i.status.clone())
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default();
            let current: Vec<Address> = current
                .iter()
                .filter_map(|a| {
                    a.ip.as_ref()
                        .map(|ip| Address::Ip(ip.clone()))
                        .or_else(|| a.hostname.as_ref().map(|h| Address::Hostname(h.clone())))
                })
                .collect();
            if current == list {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": wanted}}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    METRICS
                        .ingress_status_updates
                        .with_label_values(&["success"])
                        .inc();
                    tracing::info!(ingress = %format!("{namespace}/{name}"), addresses = ?list, "Ingress status written");
                }
                Err(e) => {
                    METRICS
                        .ingress_status_updates
                        .with_label_values(&["failure"])
                        .inc();
                    tracing::warn!(ingress = %format!("{namespace}/{name}"), "cannot write the Ingress status: {e}");
                }
            }
        }
    }

    /// Publish `list` once it has held for SETTLE (at once the first time
    /// with fixed `publish_addresses`, which cannot flap).
    fn settle(&mut self, list: Vec<Address>) {
        if self.published.as_ref() == Some(&list) {
            self.pending = None;
            return;
        }
        if !self.settings.publish_addresses.is_empty() {
            self.published = Some(list);
            return;
        }
        match &self.pending {
            Some((seen, since)) if *seen == list => {
                if since.elapsed() >= SETTLE {
                    self.published = Some(list);
                    self.pending = None;
                }
            }
            _ => self.pending = Some((list, Instant::now())),
        }
    }

    async fn addresses(&self) -> Result<Vec<Address>, kube::Error> {
        if !self.settings.publish_addresses.is_empty() {
            let set: BTreeSet<Address> = self
                .settings
                .publish_addresses
                .iter()
                .map(|a| Address::parse(a))
                .collect();
            return Ok(set.into_iter().collect());
        }
        let pods: Api<PodLite> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<Pod>(&()),
        );
        let pods = pods
            .list(&ListParams::default().labels(&self.settings.publish_selector))
            .await?;
        let nodes: BTreeSet<String> = pods
            .items
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.spec.node_name.clone())
            .collect();
        let api: Api<NodeLite> =
            Api::all_with(self.client.clone(), &ApiResource::erase::<Node>(&()));
        let mut set = BTreeSet::new();
        for name in nodes {
            if let Some(node) = api.get_opt(&name).await? {
                if let Some(ip) = node_address(&node) {
                    set.insert(Address::Ip(ip));
                }
            }
        }
        Ok(set.into_iter().collect())
    }
}

// Pods and Nodes are read into the few fields used here, not k8s-openapi's
// whole types: their deserializers alone were ~1 MB of the binary.

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecLite {
    node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
struct PodStatusLite {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

type PodLite = Object<PodSpecLite, PodStatusLite>;

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct NodeStatusLite {
    #[serde(default)]
    addresses: Vec<NodeAddress>,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
struct NodeAddress {
    #[serde(rename = "type")]
    type_: String,
    address: String,
}

pub type NodeLite = Object<Option<NotUsed>, NodeStatusLite>;

fn is_ready(pod: &PodLite) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// A Node's ExternalIP, else its InternalIP.
pub fn node_address(node: &NodeLite) -> Option<String> {
    let addresses = &node.status.as_ref()?.addresses;
    let of = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.type_ == kind)
            .map(|a| a.address.clone())
    };
    of("ExternalIP").or_else(|| of("InternalIP"))
}
