//! `gateway:`: serve Gateway API objects (Gateways of our GatewayClass, their
//! HTTPRoutes and GRPCRoutes) beside the configuration file's routes and the
//! Ingresses.
//!
//! Until the Gateway API CRDs are installed the proxy says so once and looks
//! again every [`CRD_POLL`]; everything else is served meanwhile. Then
//! kube-rs watches fill reflector stores (GatewayClasses, Gateways, the two
//! route kinds, ReferenceGrants, Namespaces' labels), and the Secrets and
//! Services references name are followed by name (`ingress::named`). Any
//! change recomputes everything from the stores ([`translate`]: a pure
//! function, the same on every node) and publishes the routes with one
//! snapshot swap, the listeners' certificates with one resolver swap, and the
//! status each object should have to the status writer ([`status`]), which
//! writes it while this proxy holds the status Lease.

pub mod status;
pub mod translate;
pub mod types;

use crate::config::GatewaySettings;
use crate::drain::ShutdownHooks;
use crate::ingress::named;
use crate::kube::follow_dynamic;
use crate::problems::{Problem, ProblemKind};
use crate::state::{Publisher, SourceId};
use crate::tls::SniResolver;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use translate::{Inputs, Ports};
use types::*;

/// How often the proxy looks for the CRDs while they are not installed.
const CRD_POLL: Duration = Duration::from_secs(10);
/// Changes arriving together are recomputed once.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a recompute waits for the first list of a newly named object.
const NAMED_LIST_WAIT: Duration = Duration::from_secs(5);

/// Which of the kinds the API server serves.
struct Installed {
    grpc_routes: bool,
    reference_grants: bool,
}

/// Whether the Gateway API CRDs are installed (Gateways, GatewayClasses and
/// HTTPRoutes at v1 at least).
async fn installed(client: &Client) -> Result<Option<Installed>, kube::Error> {
    let list = match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => list,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
        Err(e) => return Err(e),
    };
    let has = |plural: &str| list.resources.iter().any(|r| r.name == plural);
    if !(has("gateways") && has("gatewayclasses") && has("httproutes")) {
        return Ok(None);
    }
    Ok(Some(Installed {
        grpc_routes: has("grpcroutes"),
        reference_grants: has("referencegrants"),
    }))
}

/// Start serving Gateway API objects (on the control-plane runtime);
/// returns at once.
pub async fn start(
    settings: GatewaySettings,
    ports: Ports,
    publisher: Arc<Publisher>,
    certs: Option<Arc<SniResolver>>,
    hooks: Arc<ShutdownHooks>,
) -> anyhow::Result<()> {
    let client = crate::kube::client().await?;
    tokio::spawn(async move {
        let kinds = wait_for_crds(&client, &publisher).await;
        let changed = Arc::new(Notify::new());
        let follow = |resource: ApiResource| {
            let api = Api::all_with(client.clone(), &resource);
            follow_dynamic(api, &resource, watcher::Config::default(), &changed)
        };
        let stores = Stores {
            classes: follow(ApiResource::erase::<GatewayClass>(&())),
            gateways: follow(ApiResource::erase::<Gateway>(&())),
            http_routes: follow(ApiResource::erase::<HttpRoute>(&())),
            grpc_routes: kinds
                .grpc_routes
                .then(|| follow(ApiResource::erase::<GrpcRoute>(&()))),
            grants: kinds
                .reference_grants
                .then(|| follow(ApiResource::erase::<ReferenceGrant>(&()))),
            namespaces: follow(ApiResource::erase::<NamespaceLabels>(&())),
        };
        if let Err(e) = stores.wait_until_ready().await {
            tracing::error!("Gateway API watches ended before their first list: {e}");
            return;
        }
        tracing::info!("Gateway API objects listed: serving their routes");
        let (desired, desired_rx) = watch::channel(Arc::default());
        if settings.publish_status {
            tokio::spawn(status::run(
                client.clone(),
                settings.clone(),
                desired_rx,
                stores.clone(),
                hooks,
            ));
        }
        let mut controller = Controller {
            settings,
            ports,
            publisher,
            certs,
            desired,
            named: named::Watches::new(client, &changed),
        };
        loop {
            controller.recompute(&stores).await;
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
        }
    });
    Ok(())
}

/// Wait until the CRDs are installed; meanwhile the Gateway source counts as
/// listed, with no routes, so that /readyz does not wait for it.
async fn wait_for_crds(client: &Client, publisher: &Publisher) -> Installed {
    let mut said = false;
    loop {
        match installed(client).await {
            Ok(Some(kinds)) => return kinds,
            Ok(None) if !said => {
                tracing::warn!(
                    "Gateway API CRDs are not installed ({GROUP}/{VERSION}: Gateway, GatewayClass, HTTPRoute): \
                     nothing to serve from them; looking again every {CRD_POLL:?}"
                );
                said = true;
                if let Err(e) = publisher.publish(SourceId::Gateway, Vec::new(), true).await {
                    tracing::error!("publishing without Gateway API routes: {e:#}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("looking for the Gateway API CRDs: {e}"),
        }
        tokio::time::sleep(CRD_POLL).await;
    }
}

/// The reflector stores of the watched kinds, untyped (`follow_dynamic`).
#[derive(Clone)]
pub struct Stores {
    pub classes: Store<DynamicObject>,
    pub gateways: Store<DynamicObject>,
    pub http_routes: Store<DynamicObject>,
    pub grpc_routes: Option<Store<DynamicObject>>,
    pub grants: Option<Store<DynamicObject>>,
    pub namespaces: Store<DynamicObject>,
}

/// A store's objects read into their type; one that does not read is
/// reported and left out.
fn typed<K: serde::de::DeserializeOwned>(
    store: Option<&Store<DynamicObject>>,
    problems: &mut Vec<Problem>,
) -> Vec<Arc<K>> {
    let Some(store) = store else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter_map(|o| match read(o) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                let m = &o.metadata;
                let id = format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or("")
                );
                let kind = o.types.as_ref().map_or("object", |t| t.kind.as_str());
                problems.push(Problem::new(
                    &id,
                    ProblemKind::Refused,
                    format!("{kind} {id} does not read: {e}"),
                ));
                None
            }
        })
        .collect()
}

/// One object in its own type (the fields it reads; see types.rs).
pub fn read<K: serde::de::DeserializeOwned>(o: &DynamicObject) -> Result<K, serde_json::Error> {
    let mut value = o.data.clone();
    value["metadata"] = serde_json::to_value(&o.metadata)?;
    serde_json::from_value(value)
}

impl Stores {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.http_routes.wait_until_ready().await?;
        if let Some(s) = &self.grpc_routes {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.grants {
            s.wait_until_ready().await?;
        }
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }
}

struct Controller {
    settings: GatewaySettings,
    ports: Ports,
    publisher: Arc<Publisher>,
    certs: Option<Arc<SniResolver>>,
    desired: watch::Sender<Arc<status::Desired>>,
    named: named::Watches,
}

impl Controller {
    async fn recompute(&mut self, stores: &Stores) {
        let mut unreadable = Vec::new();
        let classes = typed(Some(&stores.classes), &mut unreadable);
        let gateways = typed(Some(&stores.gateways), &mut unreadable);
        let http_routes = typed(Some(&stores.http_routes), &mut unreadable);
        let grpc_routes = typed(stores.grpc_routes.as_ref(), &mut unreadable);
        let grants = typed(stores.grants.as_ref(), &mut unreadable);
        let namespaces = typed(Some(&stores.namespaces), &mut unreadable);
        let translate_with = |named: &named::NamedObjects| {
            translate::translate(&Inputs {
                class: &self.settings.class,
                classes: &classes,
                gateways: &gateways,
                http_routes: &http_routes,
                grpc_routes: &grpc_routes,
                grants: &grants,
                namespaces: &namespaces,
                named,
                ports: self.ports,
            })
        };
        let mut t = translate_with(&self.named.objects());
        // Newly named Secrets or Services: list them, then translate again,
        // so that a route is not reported for an object that is there.
        if self.named.follow_only(&t.wanted) {
            if !self.named.wait_listed(NAMED_LIST_WAIT).await {
                tracing::warn!(
                    "objects named by Gateway API routes not listed within {NAMED_LIST_WAIT:?}"
                );
            }
            t = translate_with(&self.named.objects());
            self.named.follow_only(&t.wanted);
        }
        unreadable.append(&mut t.problems);
        crate::problems::report("gateway", unreadable);
        if let Some(resolver) = &self.certs {
            resolver.replace_gateway(std::mem::take(&mut t.certs));
        }
        let count = t.routes.len();
        match self
            .publisher
            .publish(SourceId::Gateway, std::mem::take(&mut t.routes), true)
            .await
        {
            Ok(()) => tracing::debug!(routes = count, "Gateway API routes published"),
            Err(e) => {
                tracing::error!("Gateway API routes not published, the running ones stay: {e:#}")
            }
        }
        self.desired.send_replace(Arc::new(t.status));
    }
}
