//! The status of our GatewayClass, its Gateways (conditions, listeners,
//! `addresses`) and the routes attached to them (`status.parents[]` entries
//! of our controller), written while this proxy holds the status Lease (the
//! same one as Ingress status: `crate::kube::lease::leadership`).
//!
//! Translation says what each status should be; this writes only what
//! differs from what the object has. A condition keeps its
//! `lastTransitionTime` while its status stays the same, so nothing flaps and
//! an unchanged object is never written. Other controllers' entries in a
//! route's `status.parents` are kept as they are.

use super::translate::{Kind, StatusKey};
use super::types::*;
use super::Stores;
use crate::config::GatewaySettings;
use crate::drain::ShutdownHooks;
use crate::ingress::status::Addresses;
use crate::kube::lease;
use crate::metrics::METRICS;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What translation says each status should be.
pub type Desired = BTreeMap<StatusKey, Value>;

/// How often the holder looks again (addresses can change without an event).
const INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(
    client: Client,
    settings: GatewaySettings,
    mut desired: watch::Receiver<Arc<Desired>>,
    stores: Stores,
    hooks: Arc<ShutdownHooks>,
) {
    let mut leading = lease::leadership(&client, &hooks);
    let namespace = crate::kube::own_namespace(&client);
    let mut addresses = Addresses::new(settings.publish_selector, settings.publish_addresses);
    let mut writer = Writer::default();
    loop {
        if *leading.borrow_and_update() {
            let list = addresses.current(&client, &namespace).await;
            let want = desired.borrow_and_update().clone();
            writer
                .write_changed(&client, &want, list.as_deref(), &stores)
                .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = leading.changed() => {}
            _ = desired.changed() => {}
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Give each desired condition in `conditions` the `lastTransitionTime` of
/// the current condition of its type when the status is the same, else now.
fn with_times(conditions: &mut Value, current: Option<&Value>, now: &str) {
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    for c in list {
        let kind = c["type"].clone();
        let same = current
            .and_then(|cur| cur.as_array())
            .and_then(|cur| cur.iter().find(|x| x["type"] == kind))
            .filter(|x| x["status"] == c["status"]);
        c["lastTransitionTime"] = match same {
            Some(x) if x["lastTransitionTime"].is_string() => x["lastTransitionTime"].clone(),
            _ => json!(now),
        };
    }
}

/// A Gateway or GatewayClass status with times, and whether it differs.
fn object_status(mut want: Value, current: Option<&Value>, now: &str) -> Option<Value> {
    with_times(
        &mut want["conditions"],
        current.map(|c| &c["conditions"]),
        now,
    );
    // `get_mut`: indexing a missing key would insert a null.
    if let Some(listeners) = want.get_mut("listeners").and_then(Value::as_array_mut) {
        for l in listeners {
            let cur = current
                .and_then(|c| c["listeners"].as_array())
                .and_then(|ls| ls.iter().find(|x| x["name"] == l["name"]));
            with_times(&mut l["conditions"], cur.map(|c| &c["conditions"]), now);
        }
    }
    let unchanged = current.is_some_and(|cur| {
        want.as_object()
            .is_some_and(|w| w.iter().all(|(k, v)| cur.get(k) == Some(v)))
    });
    (!unchanged).then_some(want)
}

/// A route's `status.parents`: others' entries kept, ours as desired (none
/// when `ours` is empty); `None` when nothing changes.
fn route_parents(ours: &[Value], current: Option<&Value>, now: &str) -> Option<Value> {
    // Each parentRef as we write it (the server may have defaulted it).
    let current: Vec<Value> = current
        .and_then(|s| s["parents"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|mut p| {
            if let Ok(r) = serde_json::from_value::<ParentReference>(p["parentRef"].clone()) {
                p["parentRef"] = r.normalized();
            }
            p
        })
        .collect();
    let mine = |p: &Value| p["controllerName"] == GatewaySettings::CONTROLLER;
    let mut parents: Vec<Value> = current.iter().filter(|p| !mine(p)).cloned().collect();
    for entry in ours {
        let mut entry = entry.clone();
        let cur = current
            .iter()
            .find(|p| mine(p) && p["parentRef"] == entry["parentRef"]);
        with_times(&mut entry["conditions"], cur.map(|c| &c["conditions"]), now);
        parents.push(entry);
    }
    (parents != current).then(|| json!({ "parents": parents }))
}

/// Writes what differs; remembers which of its writes the watches have not
/// shown yet, so that a status is not written twice while its own update is
/// on its way back (a watch lags a write by a few milliseconds to seconds).
#[derive(Default)]
struct Writer {
    /// The resourceVersion an object had when its status was written: until
    /// the store shows another, the write is not seen yet.
    unseen: HashMap<StatusKey, Option<String>>,
}

impl Writer {
    async fn write_changed(
        &mut self,
        client: &Client,
        want: &Desired,
        addresses: Option<&[crate::ingress::status::Address]>,
        stores: &Stores,
    ) {
        let now = now();
        let mut writes = Vec::new();
        for (key, status) in want {
            let (kind, namespace, name) = key;
            let (current, version) = observed(stores, kind, namespace, name);
            let next = match kind {
                Kind::GatewayClass => object_status(status.clone(), current.as_ref(), &now),
                Kind::Gateway => {
                    let mut status = status.clone();
                    if let Some(list) = addresses {
                        status["addresses"] = list.iter().map(address).collect();
                    }
                    object_status(status, current.as_ref(), &now)
                }
                Kind::HttpRoute | Kind::GrpcRoute => {
                    let ours = status.as_array().cloned().unwrap_or_default();
                    route_parents(&ours, current.as_ref(), &now)
                }
            };
            writes.push((key.clone(), version, next));
        }
        // Routes that had our entries and are no longer ours: entries removed.
        for (kind, list) in [
            (Kind::HttpRoute, route_keys(&stores.http_routes.state())),
            (
                Kind::GrpcRoute,
                stores
                    .grpc_routes
                    .as_ref()
                    .map(|s| route_keys(&s.state()))
                    .unwrap_or_default(),
            ),
        ] {
            for (namespace, name, status, version) in list {
                let key = (kind.clone(), namespace, name);
                if !want.contains_key(&key) {
                    let next = route_parents(&[], status.as_ref(), &now);
                    writes.push((key, version, next));
                }
            }
        }
        for (key, version, next) in writes {
            if self.unseen.get(&key).is_some_and(|v| *v == version) {
                continue; // our last write is not in the store yet
            }
            self.unseen.remove(&key);
            if let Some(next) = next {
                let (kind, namespace, name) = &key;
                if patch_status(client, kind, namespace, name, next).await {
                    self.unseen.insert(key, version);
                }
            }
        }
    }
}

fn address(a: &crate::ingress::status::Address) -> Value {
    match a {
        crate::ingress::status::Address::Ip(ip) => json!({"type": "IPAddress", "value": ip}),
        crate::ingress::status::Address::Hostname(h) => json!({"type": "Hostname", "value": h}),
    }
}

/// An object's status and resourceVersion as the store has them.
fn observed(
    stores: &Stores,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> (Option<Value>, Option<String>) {
    let store = match kind {
        Kind::GatewayClass => Some(&stores.classes),
        Kind::Gateway => Some(&stores.gateways),
        Kind::HttpRoute => Some(&stores.http_routes),
        Kind::GrpcRoute => stores.grpc_routes.as_ref(),
    };
    let mut key = ObjectRef::new_with(name, resource(kind));
    if !namespace.is_empty() {
        key = key.within(namespace);
    }
    match store.and_then(|s| s.get(&key)) {
        Some(o) => (status_of(&o), o.metadata.resource_version.clone()),
        None => (None, None),
    }
}

fn status_of(o: &DynamicObject) -> Option<Value> {
    o.data.get("status").filter(|s| !s.is_null()).cloned()
}

/// The API resource of a kind (for untyped requests and store keys).
fn resource(kind: &Kind) -> ApiResource {
    match kind {
        Kind::GatewayClass => ApiResource::erase::<GatewayClass>(&()),
        Kind::Gateway => ApiResource::erase::<Gateway>(&()),
        Kind::HttpRoute => ApiResource::erase::<HttpRoute>(&()),
        Kind::GrpcRoute => ApiResource::erase::<GrpcRoute>(&()),
    }
}

/// Every route of a kind: (namespace, name, status, resourceVersion).
type RouteRow = (String, String, Option<Value>, Option<String>);

fn route_keys(list: &[Arc<DynamicObject>]) -> Vec<RouteRow> {
    list.iter()
        .map(|r| {
            let m = &r.metadata;
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
                status_of(r),
                m.resource_version.clone(),
            )
        })
        .collect()
}

/// Whether the write succeeded.
async fn patch_status(
    client: &Client,
    kind: &Kind,
    namespace: &str,
    name: &str,
    status: Value,
) -> bool {
    let patch = json!({ "status": status });
    let resource = resource(kind);
    let api: Api<DynamicObject> = match kind {
        Kind::GatewayClass => Api::all_with(client.clone(), &resource),
        _ => Api::namespaced_with(client.clone(), namespace, &resource),
    };
    let result = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let object = format!("{}/{namespace}/{name}", kind.plural());
    match result {
        Ok(_) => {
            METRICS
                .gateway_status_updates
                .with_label_values(&["success"])
                .inc();
            tracing::info!(%object, "Gateway API status written");
            true
        }
        Err(e) => {
            METRICS
                .gateway_status_updates
                .with_label_values(&["failure"])
                .inc();
            tracing::warn!(%object, "cannot write the Gateway API status: {e}");
            false
        }
    }
}
