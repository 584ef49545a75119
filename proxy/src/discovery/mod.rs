//! Where endpoints come from: one [`ServiceDiscovery`] per upstream.
//!
//! Every mode implements pingora-load-balancing's `ServiceDiscovery`, so the
//! balancer, readiness and the affinity index treat them all alike. A
//! [`Source`] describes what an upstream's discovery depends on: on a reload, an
//! upstream whose source did not change is kept, with its watch and state.
//!
//! Discovery tasks run on the control-plane runtime, never on the proxy's.

pub mod dns;
pub mod kubernetes;

use crate::config::{Config, Discovery, ServicePort, UpstreamKey};
use crate::upstream::Upstream;
use pingora::lb::discovery::Static;
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// What one upstream's endpoints are derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Static(Vec<SocketAddr>),
    /// EndpointSlices of the upstream's Service, in its namespace.
    Kubernetes,
    /// The addresses a DNS name resolves to, each with `port`.
    Dns {
        name: String,
        port: u16,
    },
}

impl Source {
    /// The source for `key` under `config`, or an error naming what is missing.
    pub fn for_upstream(config: &Config, key: &UpstreamKey) -> anyhow::Result<Source> {
        match &config.discovery {
            Discovery::Static(endpoints) => Ok(Source::Static(
                endpoints.get(&key.service).cloned().unwrap_or_default(),
            )),
            Discovery::Kubernetes => Ok(Source::Kubernetes),
            Discovery::Dns { name_template } => {
                let ServicePort::Number(port) = key.port else {
                    // Validation rejects named ports with dns; this is a backstop.
                    anyhow::bail!("{key}: discovery: dns needs a port number");
                };
                let name = name_template
                    .replace("{service}", &key.service)
                    .replace("{namespace}", &key.namespace);
                Ok(Source::Dns { name, port })
            }
        }
    }

    /// A new upstream fed by this source. Kubernetes upstreams wait a short
    /// while for their first endpoint list, so a reload does not route to an
    /// empty upstream; past that they start empty (503) and /readyz says so.
    pub async fn start(&self, key: &UpstreamKey) -> anyhow::Result<Arc<Upstream>> {
        match self {
            Source::Static(addrs) => {
                let upstream = Arc::new(Upstream::new(key.clone(), Static::new(backends(addrs))));
                upstream
                    .refresh()
                    .await
                    .map_err(|e| anyhow::anyhow!("discovery for {key}: {e}"))?;
                upstream.set_synced();
                Ok(upstream)
            }
            Source::Kubernetes => kubernetes::start(key).await,
            Source::Dns { name, port } => dns::start(key, name.clone(), *port).await,
        }
    }
}

pub fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

fn backends(addrs: &[SocketAddr]) -> BTreeSet<Backend> {
    addrs.iter().copied().map(backend).collect()
}
