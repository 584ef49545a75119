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
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use serde_json::{json, Value};
use std::collections::BTreeMap;
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
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut addresses = Addresses::new(settings.publish_selector, settings.publish_addresses);
    loop {
        if *leading.borrow_and_update() {
            let list = addresses.current(&client, &namespace).await;
            let want = desired.borrow_and_update().clone();
            write_changed(&client, &want, list.as_deref(), &stores).await;
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
    let current: Vec<Value> = current
        .and_then(|s| s["parents"].as_array().cloned())
        .unwrap_or_default();
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

async fn write_changed(
    client: &Client,
    want: &Desired,
    addresses: Option<&[crate::ingress::status::Address]>,
    stores: &Stores,
) {
    let now = now();
    for ((kind, namespace, name), status) in want {
        let (current, patch) = match kind {
            Kind::GatewayClass => {
                let cur = stores
                    .classes
                    .get(&ObjectRef::new(name))
                    .and_then(|o| o.status.clone());
                (cur, status.clone())
            }
            Kind::Gateway => {
                let cur = stores
                    .gateways
                    .get(&ObjectRef::new(name).within(namespace))
                    .and_then(|o| o.status.clone());
                let mut status = status.clone();
                if let Some(list) = addresses {
                    status["addresses"] = list
                        .iter()
                        .map(|a| match a {
                            crate::ingress::status::Address::Ip(ip) => {
                                json!({"type": "IPAddress", "value": ip})
                            }
                            crate::ingress::status::Address::Hostname(h) => {
                                json!({"type": "Hostname", "value": h})
                            }
                        })
                        .collect();
                }
                (cur, status)
            }
            Kind::HttpRoute | Kind::GrpcRoute => {
                let cur = route_status(stores, kind, namespace, name);
                let ours = status.as_array().cloned().unwrap_or_default();
                if let Some(next) = route_parents(&ours, cur.as_ref(), &now) {
                    patch_status(client, kind, namespace, name, next).await;
                }
                continue;
            }
        };
        if let Some(next) = object_status(patch, current.as_ref(), &now) {
            patch_status(client, kind, namespace, name, next).await;
        }
    }
    // Routes that had our entries and are no longer ours: entries removed.
    for (kind, routes) in [
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
        for (namespace, name, status) in routes {
            if want.contains_key(&(kind.clone(), namespace.clone(), name.clone())) {
                continue;
            }
            if let Some(next) = route_parents(&[], status.as_ref(), &now) {
                patch_status(client, &kind, &namespace, &name, next).await;
            }
        }
    }
}

fn route_keys<K: kube::Resource + HasStatus>(
    list: &[Arc<K>],
) -> Vec<(String, String, Option<Value>)> {
    list.iter()
        .map(|r| {
            let m = r.meta();
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
                r.status().cloned(),
            )
        })
        .collect()
}

/// The status as read, of the kinds that have one here.
pub trait HasStatus {
    fn status(&self) -> Option<&Value>;
}

impl HasStatus for HttpRoute {
    fn status(&self) -> Option<&Value> {
        self.status.as_ref()
    }
}

impl HasStatus for GrpcRoute {
    fn status(&self) -> Option<&Value> {
        self.status.as_ref()
    }
}

fn route_status(stores: &Stores, kind: &Kind, namespace: &str, name: &str) -> Option<Value> {
    match kind {
        Kind::GrpcRoute => stores
            .grpc_routes
            .as_ref()?
            .get(&ObjectRef::new(name).within(namespace))?
            .status
            .clone(),
        _ => stores
            .http_routes
            .get(&ObjectRef::new(name).within(namespace))?
            .status
            .clone(),
    }
}

async fn patch_status(client: &Client, kind: &Kind, namespace: &str, name: &str, status: Value) {
    let patch = json!({ "status": status });
    let params = PatchParams::default();
    let result = match kind {
        Kind::GatewayClass => Api::<GatewayClass>::all(client.clone())
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        Kind::Gateway => Api::<Gateway>::namespaced(client.clone(), namespace)
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        Kind::HttpRoute => Api::<HttpRoute>::namespaced(client.clone(), namespace)
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        Kind::GrpcRoute => Api::<GrpcRoute>::namespaced(client.clone(), namespace)
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
    };
    let object = format!("{}/{namespace}/{name}", kind.plural());
    match result {
        Ok(()) => {
            METRICS
                .gateway_status_updates
                .with_label_values(&["success"])
                .inc();
            tracing::info!(%object, "Gateway API status written");
        }
        Err(e) => {
            METRICS
                .gateway_status_updates
                .with_label_values(&["failure"])
                .inc();
            tracing::warn!(%object, "cannot write the Gateway API status: {e}");
        }
    }
}
