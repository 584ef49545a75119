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
use crate::kube::follow;
use crate::state::{Publisher, SourceId};
use crate::tls::SniResolver;
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
        let stores = Stores {
            classes: follow(
                Api::<GatewayClass>::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            gateways: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            http_routes: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            grpc_routes: kinds.grpc_routes.then(|| {
                follow(
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    &changed,
                )
            }),
            grants: kinds.reference_grants.then(|| {
                follow(
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    &changed,
                )
            }),
            namespaces: follow(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
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

/// The reflector stores of the watched kinds.
#[derive(Clone)]
pub struct Stores {
    pub classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HttpRoute>,
    pub grpc_routes: Option<Store<GrpcRoute>>,
    pub grants: Option<Store<ReferenceGrant>>,
    pub namespaces: Store<NamespaceLabels>,
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
        let classes = stores.classes.state();
        let gateways = stores.gateways.state();
        let http_routes = stores.http_routes.state();
        let grpc_routes = stores
            .grpc_routes
            .as_ref()
            .map(|s| s.state())
            .unwrap_or_default();
        let grants = stores
            .grants
            .as_ref()
            .map(|s| s.state())
            .unwrap_or_default();
        let namespaces = stores.namespaces.state();
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
        crate::problems::report("gateway", std::mem::take(&mut t.problems));
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
