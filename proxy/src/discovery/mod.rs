//! Where endpoints come from: one [`ServiceDiscovery`] per upstream.
//!
//! Every mode implements pingora-load-balancing's `ServiceDiscovery`, so the
//! balancer, readiness and the affinity index treat them all alike. A
//! [`Source`] describes what an upstream's discovery depends on: on a reload, an
//! upstream whose source did not change is kept, with its connections and state.

use crate::config::{Config, Discovery, UpstreamKey};
use pingora::lb::discovery::{ServiceDiscovery, Static};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// What one upstream's endpoints are derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Static(Vec<SocketAddr>),
}

impl Source {
    /// The source for `key` under `config`, or an error naming what is missing.
    pub fn for_upstream(config: &Config, key: &UpstreamKey) -> anyhow::Result<Source> {
        match &config.discovery {
            Discovery::Static(endpoints) => Ok(Source::Static(
                endpoints.get(&key.service).cloned().unwrap_or_default(),
            )),
            Discovery::Kubernetes => {
                anyhow::bail!("discovery: kubernetes is not available in this version yet")
            }
            Discovery::Dns { .. } => {
                anyhow::bail!("discovery: dns is not available in this version yet")
            }
        }
    }

    pub fn discovery(&self) -> Box<dyn ServiceDiscovery + Send + Sync> {
        match self {
            Source::Static(addrs) => {
                let backends: BTreeSet<Backend> = addrs
                    .iter()
                    .map(|a| Backend {
                        addr: pingora::protocols::l4::socket::SocketAddr::Inet(*a),
                        weight: 1,
                        ext: Default::default(),
                    })
                    .collect();
                Static::new(backends)
            }
        }
    }
}
