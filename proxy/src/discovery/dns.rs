//! `discovery: dns`: resolve one name per Service (a headless Service's A/AAAA
//! records in Kubernetes, the service name in docker compose) and follow it.
//!
//! Each upstream re-resolves when its records' TTL runs out, at least every
//! second and at most every 30 s. A name that does not exist (or has no
//! records) means no endpoints; a failed lookup (timeout, SERVFAIL) keeps the
//! last good set and retries. Name servers come from `/etc/resolv.conf`, or the
//! file named by `EDGE_PROXY_RESOLV_CONF`, and are asked as glibc asks them:
//! one at a time, in the listed order, the next only when one does not answer.
//! (hickory's default asks two at once and takes the first reply; in a
//! container that lists the engine's DNS server and the host's, the host's
//! NXDOMAIN for a compose service name could then win the race.)
//!
//! A name that stops resolving (or starts again) is logged once per change,
//! and every lookup is counted by result in `edge_proxy_dns_lookups_total`.

use crate::metrics::METRICS;
use crate::route::UpstreamKey;
use crate::upstream::{AbortOnDrop, EndpointSet, Upstream};
use hickory_resolver::config::{ResolverConfig, ServerOrderingStrategy};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(30);

static RESOLVER: OnceCell<Resolver<TokioRuntimeProvider>> = OnceCell::const_new();

async fn resolver() -> anyhow::Result<&'static Resolver<TokioRuntimeProvider>> {
    RESOLVER
        .get_or_try_init(|| async {
            let path = std::env::var("EDGE_PROXY_RESOLV_CONF")
                .unwrap_or_else(|_| "/etc/resolv.conf".into());
            let text = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("discovery: dns: cannot read {path}: {e}"))?;
            let (config, mut options) = hickory_resolver::system_conf::parse_resolv_conf(text)
                .map_err(|e| anyhow::anyhow!("discovery: dns: {path}: {e}"))?;
            // glibc's order: one server at a time, as listed; a server's
            // NXDOMAIN is its answer, the next is asked only on a timeout.
            options.num_concurrent_reqs = 1;
            options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
            let (domain, search, mut servers) = config.into_parts();
            for server in &mut servers {
                server.trust_negative_responses = true;
            }
            let config = ResolverConfig::from_parts(domain, search, servers);
            // We follow TTLs ourselves; a cached answer must not outlive them.
            options.positive_max_ttl = Some(MAX_INTERVAL);
            options.negative_max_ttl = Some(MIN_INTERVAL);
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| anyhow::anyhow!("discovery: dns: {e}"))
        })
        .await
}

/// Start following `name` for `key`, with `port` on every address.
pub async fn start(key: &UpstreamKey, name: String, port: u16) -> anyhow::Result<Arc<Upstream>> {
    let resolver = resolver().await?;
    let upstream = Arc::new(Upstream::new(key.clone()));
    let task = tokio::spawn(follow(
        resolver,
        key.to_string(),
        name,
        port,
        Arc::downgrade(&upstream),
    ));
    upstream.attach(Box::new(AbortOnDrop(task.abort_handle())));
    Ok(upstream)
}

async fn follow(
    resolver: &'static Resolver<TokioRuntimeProvider>,
    service: String,
    name: String,
    port: u16,
    upstream: Weak<Upstream>,
) {
    let mut failures = 0u32;
    // Whether the name resolved last time: a change is logged once, not each lookup.
    let mut resolved: Option<bool> = None;
    loop {
        let (found, wait) = match resolver.lookup_ip(name.as_str()).await {
            Ok(lookup) => {
                failures = 0;
                let addrs: BTreeSet<SocketAddr> =
                    lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now());
                (Some(addrs), ttl.clamp(MIN_INTERVAL, MAX_INTERVAL))
            }
            // The name is gone or has no addresses: no endpoints.
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                (Some(BTreeSet::new()), MIN_INTERVAL)
            }
            Err(e) => {
                failures += 1;
                METRICS
                    .discovery_errors
                    .with_label_values(&[&service])
                    .inc();
                tracing::warn!(
                    service,
                    name,
                    "DNS lookup failed, keeping the last good endpoints: {e}"
                );
                (None, (MIN_INTERVAL * failures).min(MAX_INTERVAL))
            }
        };
        // What the lookup said, counted, and logged when it changes.
        let (result, resolves) = match &found {
            None => ("error", None),
            Some(addrs) if addrs.is_empty() => ("no_records", Some(false)),
            Some(_) => ("ok", Some(true)),
        };
        METRICS
            .dns_lookups
            .with_label_values(&[&service, result])
            .inc();
        if resolves.is_some() && resolves != resolved {
            match resolves {
                Some(false) => tracing::warn!(
                    service,
                    name,
                    "the name does not resolve (no such name, or no addresses): no endpoints, requests for it get 503"
                ),
                _ if resolved.is_some() => tracing::info!(service, name, "the name resolves again"),
                _ => {}
            }
            resolved = resolves;
        }
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        // A failed lookup keeps the last good set (and an unsynced upstream unsynced).
        if let Some(addrs) = found {
            upstream.publish(EndpointSet::ready(addrs)).await;
        }
        drop(upstream);
        tokio::time::sleep(wait).await;
    }
}
