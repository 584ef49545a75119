//! Where endpoints come from.
//!
//! Every mode feeds its upstreams the same way, [`Upstream::publish`] with an
//! endpoint set, so the balancer, readiness and the affinity index treat them
//! all alike. A [`Source`] describes what an upstream's discovery depends on: on
//! a reload, an upstream whose source did not change is kept, with its state.
//!
//! Starting an upstream never waits for its first list: the snapshot is
//! published at once, its routes answer 503 (with `Retry-After`) until the list
//! arrives, and `/readyz` names the upstreams still waiting.
//!
//! Discovery tasks run on the control-plane runtime, never on the proxy's.

pub mod dns;
pub mod kubernetes;

use crate::config::{Config, Discovery};
use crate::route::{ServicePort, UpstreamKey};
use crate::upstream::{EndpointSet, Upstream};
use pingora::lb::Backend;
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
        if let Some(addr) = key.cluster_ip {
            // kube-proxy spreads the connections over the endpoints.
            return Ok(Source::Static(vec![addr]));
        }
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

    /// A new upstream fed by this source; returns at once (see above). The
    /// error is one that no retry mends: no API server configured, say.
    pub async fn start(&self, key: &UpstreamKey) -> anyhow::Result<Arc<Upstream>> {
        match self {
            Source::Static(addrs) => {
                let upstream = Arc::new(Upstream::new(key.clone()));
                upstream
                    .publish(EndpointSet::ready(addrs.iter().copied()))
                    .await;
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
