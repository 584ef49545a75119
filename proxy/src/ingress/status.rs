//! `status.loadBalancer.ingress` of the served Ingresses: the addresses clients
//! should use, for `kubectl get ingress` and ExternalDNS.
//!
//! One proxy writes at a time: the holder of a `coordination.k8s.io` Lease in
//! the proxy's namespace (`crate::kube::lease::leadership`, shared with the
//! Gateway API status).
//!
//! The addresses: `publish_addresses` when set; else one per Node running a
//! Ready pod of `publish_selector` (its ExternalIP, else its InternalIP),
//! sorted. Against flapping, a new list is written only once it has held for
//! [`SETTLE`] (a rolling update of the DaemonSet takes a node out for seconds),
//! an empty list is never written (the last one stays), and an Ingress whose
//! status already says it is not written again.

use crate::config::IngressSettings;
use crate::drain::ShutdownHooks;
use crate::kube::lease;
use crate::metrics::METRICS;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, NotUsed, Object};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the holder writes what changed.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long a new address list must hold before it is written.
const SETTLE: Duration = Duration::from_secs(4);

/// The status writer, for the life of the process. `served` holds the
/// Ingresses to keep current; `ingresses` their last known state. It writes
/// while this proxy holds the status Lease (`crate::kube::lease`).
pub async fn run(
    client: Client,
    settings: IngressSettings,
    served: watch::Receiver<Vec<(String, String)>>,
    ingresses: Store<Ingress>,
    hooks: Arc<ShutdownHooks>,
) {
    let mut leading = lease::leadership(&client, &hooks);
    let namespace = crate::kube::own_namespace(&client);
    let mut writer = Writer {
        client,
        namespace,
        addresses: Addresses::new(
            settings.publish_selector.clone(),
            settings.publish_addresses.clone(),
        ),
    };
    loop {
        if *leading.borrow_and_update() {
            let served = served.borrow().clone();
            writer.update(&served, &ingresses).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = leading.changed() => {}
        }
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

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Address::Ip(ip) => serde_json::json!({ "ip": ip }),
            Address::Hostname(h) => serde_json::json!({ "hostname": h }),
        }
    }
}

struct Writer {
    client: Client,
    namespace: String,
    addresses: Addresses,
}

impl Writer {
    async fn update(&mut self, served: &[(String, String)], ingresses: &Store<Ingress>) {
        let Some(list) = self.addresses.current(&self.client, &self.namespace).await else {
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
}

/// The addresses status publishes (Ingress `loadBalancer`, Gateway
/// `addresses`): `publish_addresses` when set; else one per Node running a
/// Ready pod of `publish_selector`, settled against flapping.
pub struct Addresses {
    selector: String,
    fixed: Vec<String>,
    /// A list seen but not yet held for SETTLE, and since when.
    pending: Option<(Vec<Address>, Instant)>,
    /// The settled list being published.
    published: Option<Vec<Address>>,
}

impl Addresses {
    pub fn new(selector: String, fixed: Vec<String>) -> Self {
        Addresses {
            selector,
            fixed,
            pending: None,
            published: None,
        }
    }

    /// The settled list, after looking again; `None` until there is one.
    pub async fn current(&mut self, client: &Client, namespace: &str) -> Option<Vec<Address>> {
        match self.look(client, namespace).await {
            Ok(list) if list.is_empty() => {} // never publish "nowhere"
            Ok(list) => self.settle(list),
            Err(e) => tracing::warn!("status: cannot list the proxy's nodes: {e}"),
        }
        self.published.clone()
    }

    /// Publish `list` once it has held for SETTLE (at once the first time
    /// with fixed `publish_addresses`, which cannot flap).
    fn settle(&mut self, list: Vec<Address>) {
        if self.published.as_ref() == Some(&list) {
            self.pending = None;
            return;
        }
        if !self.fixed.is_empty() {
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

    async fn look(&self, client: &Client, namespace: &str) -> Result<Vec<Address>, kube::Error> {
        if !self.fixed.is_empty() {
            let set: BTreeSet<Address> = self.fixed.iter().map(|a| Address::parse(a)).collect();
            return Ok(set.into_iter().collect());
        }
        let pods: Api<PodLite> =
            Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<Pod>(&()));
        let pods = pods
            .list(&ListParams::default().labels(&self.selector))
            .await?;
        let nodes: BTreeSet<String> = pods
            .items
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.spec.node_name.clone())
            .collect();
        let api: Api<NodeLite> = Api::all_with(client.clone(), &ApiResource::erase::<Node>(&()));
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
