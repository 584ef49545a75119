//! A route's policies compiled for the request path, once per snapshot (as
//! River chains its modifiers): the request steps in the route's order, the
//! settings they resolve to (body limit, timeouts, affinity), and the weighted
//! backends. The request path reads these and never looks at a source's types.
//!
//! Adding a policy: a variant of `route::Policy` (what a source asks), its
//! compiled form here (a [`RequestStep`] if it answers requests, else a
//! setting on [`CompiledRoute`]), and where the phase in proxy.rs runs it.

use crate::config::{net_contains, Config, IpNet, Timeouts};
use crate::metrics::RouteMetrics;
use crate::route::{Affinity, Policy, Route};
use crate::upstream::Upstream;
use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A route as the request path runs it.
pub struct CompiledRoute {
    /// The route's name, for logs and metrics: `routes[i]`, `ingress:...`.
    pub name: String,
    /// Where the route came from: how conflicts name the winner.
    pub origin: crate::route::Origin,
    /// The host pattern, for metrics: `www.example.com`, `*.example.com`, `*`.
    pub host: String,
    /// The backends as `namespace/service:port` (joined by `+`), for metrics and logs.
    pub service: String,
    /// Request policies, in the route's order; the first that answers wins.
    /// Empty for a plain route, which then costs nothing here.
    pub request: Box<[RequestStep]>,
    /// The request body limit here (`limits.max_body_bytes` or the route's),
    /// checked after the request steps (a 403 or a redirect before a 413).
    pub max_body_bytes: u64,
    /// Towards this route's endpoints (`timeouts`, or the route's).
    pub timeouts: Timeouts,
    pub affinity: Option<Affinity>,
    pub backends: Backends,
    /// Its series, resolved once here rather than by label on every request.
    pub metrics: RouteMetrics,
}

/// A request policy, compiled.
pub enum RequestStep {
    /// Only clients in these ranges; others get 403.
    AllowSources(Box<[IpNet]>),
    /// Plain HTTP gets a 308 to https.
    RedirectHttps,
}

/// What a request step sees of the request.
pub struct RequestFacts<'a> {
    pub req: &'a RequestHeader,
    /// The normalized host the route was found for.
    pub host: &'a str,
    pub peer: Option<IpAddr>,
    pub tls: bool,
    pub trusted_proxies: &'a [IpNet],
    /// The HTTPS listener's port, for redirects.
    pub https_port: Option<u16>,
}

/// An answer the proxy gives itself, instead of forwarding.
pub struct Reply {
    pub status: u16,
    pub body: Cow<'static, str>,
    pub location: Option<String>,
}

impl Reply {
    pub fn text(status: u16, body: &'static str) -> Self {
        Reply {
            status,
            body: Cow::Borrowed(body),
            location: None,
        }
    }
}

impl RequestStep {
    /// `Some` answers the request here.
    pub fn check(&self, facts: &RequestFacts) -> Option<Reply> {
        match self {
            RequestStep::AllowSources(allow) => {
                let client =
                    crate::forwarding::client_ip(facts.req, facts.peer, facts.trusted_proxies);
                let allowed = client.is_some_and(|ip| allow.iter().any(|n| net_contains(n, ip)));
                (!allowed).then(|| Reply::text(403, "this address may not use this route\n"))
            }
            RequestStep::RedirectHttps => (!facts.tls).then(|| Reply {
                status: 308,
                body: Cow::Borrowed("redirecting to https\n"),
                location: Some(https_location(facts.host, facts.https_port, facts.req)),
            }),
        }
    }
}

/// `https://HOST[:PORT]/path?query` for a redirect; the port only when not 443.
fn https_location(host: &str, https_port: Option<u16>, req: &RequestHeader) -> String {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    match https_port {
        Some(443) | None => format!("https://{host}{path}"),
        Some(port) => format!("https://{host}:{port}{path}"),
    }
}

/// A declared body over the limit is refused before anything is forwarded.
pub fn body_too_large(req: &RequestHeader, limit: u64) -> bool {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

/// A route's backends with their weights; a backend of weight 0 is left out.
pub struct Backends {
    list: Box<[(Arc<Upstream>, u32)]>,
    total: u32,
    /// Which share the next new request takes: state that outlives a snapshot
    /// (kept by route name), so a reload does not restart the split.
    turn: Arc<AtomicU32>,
}

impl Backends {
    pub fn new(list: Vec<(Arc<Upstream>, u32)>, turn: Arc<AtomicU32>) -> Self {
        let list: Box<[_]> = list.into_iter().filter(|(_, w)| *w > 0).collect();
        let total = list.iter().map(|(_, w)| *w).sum();
        Backends { list, total, turn }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first backend: whose readiness a 503 speaks of.
    pub fn primary(&self) -> Option<&Arc<Upstream>> {
        self.get(0)
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.list.get(index).map(|(u, _)| u)
    }

    /// The backend (its index) for a new request, by weight: each takes its
    /// exact share of every `total` requests, in turn.
    pub fn pick(&self) -> Option<usize> {
        if self.list.len() <= 1 {
            return (!self.list.is_empty()).then_some(0);
        }
        let mut n = self.turn.fetch_add(1, Ordering::Relaxed) % self.total;
        for (i, (_, weight)) in self.list.iter().enumerate() {
            if n < *weight {
                return Some(i);
            }
            n -= weight;
        }
        Some(0)
    }

    /// The backend (its index) that knows the endpoint an affinity cookie
    /// names: a pinned client stays on its side of a weighted split.
    pub fn holding(&self, id: crate::affinity::EndpointId) -> Option<usize> {
        match &*self.list {
            [_] => Some(0),
            list => list.iter().position(|(u, _)| u.knows(id)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter().map(|(u, _)| u)
    }
}

/// Compile one route. `upstream` gives each backend's running upstream;
/// `turn` is the route's weighted-split state.
pub fn compile(
    route: &Route,
    config: &Config,
    upstream: impl Fn(&crate::route::UpstreamKey) -> Arc<Upstream>,
    turn: Arc<AtomicU32>,
) -> CompiledRoute {
    let mut request = Vec::new();
    let mut max_body_bytes = config.limits.max_body_bytes;
    let mut timeouts = config.timeouts;
    let mut affinity = None;
    for policy in &route.policies {
        match policy {
            Policy::AllowSources(nets) => {
                request.push(RequestStep::AllowSources(nets.clone().into()));
            }
            Policy::RedirectHttps => request.push(RequestStep::RedirectHttps),
            Policy::MaxBodyBytes(n) => max_body_bytes = *n,
            Policy::Timeouts(t) => {
                timeouts.connect = t.connect.unwrap_or(timeouts.connect);
                timeouts.read = t.read.unwrap_or(timeouts.read);
                timeouts.write = t.write.unwrap_or(timeouts.write);
            }
            Policy::Affinity(a) => affinity = Some(a.clone()),
        }
    }
    let host = route.matches.host.to_string();
    let service = route
        .backends
        .iter()
        .map(|b| b.upstream.to_string())
        .collect::<Vec<_>>()
        .join("+");
    let metrics = RouteMetrics::new(&route.name, &host, &service, affinity.is_some());
    let backends = route
        .backends
        .iter()
        .map(|b| (upstream(&b.upstream), b.weight))
        .collect();
    CompiledRoute {
        name: route.name.clone(),
        origin: route.origin.clone(),
        host,
        service,
        request: request.into(),
        max_body_bytes,
        timeouts,
        affinity,
        backends: Backends::new(backends, turn),
        metrics,
    }
}

impl CompiledRoute {
    /// Run the request steps; `Some` answers the request.
    pub fn check_request(&self, facts: &RequestFacts) -> Option<Reply> {
        self.request.iter().find_map(|step| step.check(facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{ServicePort, UpstreamKey};

    fn upstream(service: &str) -> Arc<Upstream> {
        Arc::new(Upstream::new(UpstreamKey {
            namespace: "default".into(),
            service: service.into(),
            port: ServicePort::Number(80),
        }))
    }

    #[test]
    fn weighted_backends_take_their_exact_shares_and_zero_takes_none() {
        let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
        let backends = Backends::new(
            vec![(a.clone(), 3), (b.clone(), 1), (c.clone(), 0)],
            Arc::default(),
        );
        let mut counts = std::collections::HashMap::new();
        for _ in 0..400 {
            let picked = backends.get(backends.pick().unwrap()).unwrap();
            *counts.entry(picked.key.service.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.get("a"), Some(&300));
        assert_eq!(counts.get("b"), Some(&100));
        assert_eq!(counts.get("c"), None);
        assert!(Backends::new(vec![(c, 0)], Arc::default()).pick().is_none());
    }

    #[tokio::test]
    async fn a_pinned_client_stays_on_the_backend_that_knows_its_endpoint() {
        let (a, b) = (upstream("a"), upstream("b"));
        let pod: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        b.publish(crate::upstream::EndpointSet::ready([pod])).await;
        let backends = Backends::new(vec![(a.clone(), 99), (b.clone(), 1)], Arc::default());
        let id = b.endpoint_id(&pod);
        assert_eq!(backends.holding(id), Some(1));
        assert!(backends.holding(a.endpoint_id(&pod)).is_none());
    }
}
