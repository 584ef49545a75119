//! A route's policies compiled for the request path, once per snapshot (as
//! River chains its modifiers): the request steps in the route's order, the
//! settings they resolve to (body limit, timeouts, affinity), and the weighted
//! backends. The request path reads these and never looks at a source's types.
//!
//! Adding a policy: a variant of `route::Policy` (what a source asks), its
//! compiled form here (a [`RequestStep`] if it answers requests, else a
//! setting on [`CompiledRoute`]), and where the phase in proxy.rs runs it.

use crate::affinity::find_cookie;
use crate::client_limits::ClientLimits;
use crate::config::{net_contains, Config, IpNet, Timeouts};
use crate::metrics::RouteMetrics;
use crate::route::router::query_value;
use crate::route::{Affinity, HeaderChanges, PathChange, Policy, Redirect, RedirectTo, Route};
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
    /// The whole exchange, from the request's arrival (see
    /// `route::TimeoutOverrides::request`).
    pub request_timeout: Option<std::time::Duration>,
    pub affinity: Option<Affinity>,
    pub backends: Backends,
    /// The path sent upstream, rewritten.
    pub rewrite: Option<CompiledRewrite>,
    /// Headers set on the request sent upstream.
    pub set_headers: Box<[(http::HeaderName, http::HeaderValue)]>,
    /// Headers set on the response sent to the client.
    pub response_headers: Box<[(http::HeaderName, http::HeaderValue)]>,
    /// Headers set, added and removed upstream and downstream (Gateway API's
    /// header modifiers), after the two above.
    pub request_changes: Option<Box<CompiledHeaderChanges>>,
    pub response_changes: Option<Box<CompiledHeaderChanges>>,
    /// The host and path sent upstream, replaced (Gateway API's URLRewrite).
    pub rewrite_url: Option<Box<crate::route::RewriteUrl>>,
    /// Where copies of requests go (Gateway API's RequestMirror).
    pub mirrors: Box<[crate::mirror::CompiledMirror]>,
    /// With canary rules, backend 1 is the canary and they choose it.
    pub canary: Option<CanaryRules>,
    /// The consistent-hash key's template (`upstream-hash-by`).
    pub hash_by: Option<crate::route::HashBy>,
    /// Pick the least-loaded endpoint instead of round robin.
    pub least_loaded: bool,
    /// TLS and HTTP/2 towards the endpoints; `None`: HTTP/1.1.
    pub protocol: Option<crate::route::UpstreamProtocol>,
    /// The protocol's CA and client certificate, as the TLS connector takes
    /// them (built once here, not per connection).
    pub upstream_tls: UpstreamTls,
    /// The `default-backend` and the codes whose pages it serves.
    pub error_backend: Option<CompiledErrorBackend>,
    /// CORS headers for responses to allowed origins.
    pub cors: Option<Arc<CompiledCors>>,
    /// An auth service asked before every request.
    pub auth: Option<crate::auth::CompiledAuth>,
    /// Users and passwords asked of every request.
    pub basic_auth: Option<crate::auth::basic::CompiledBasicAuth>,
    /// Request rates and requests in flight per client.
    pub client_limits: Option<ClientLimits>,
    /// Response bandwidth per request.
    pub response_rate: Option<crate::route::ResponseRate>,
    /// Its series, resolved once here rather than by label on every request.
    pub metrics: RouteMetrics,
}

pub struct CompiledErrorBackend {
    pub upstream: Arc<Upstream>,
    pub intercept: Box<[u16]>,
}

impl CompiledRoute {
    /// Whether a response with `code` is replaced by an error page.
    pub fn intercepts(&self, code: u16) -> bool {
        self.error_backend
            .as_ref()
            .is_some_and(|e| e.intercept.contains(&code))
    }
}

/// A request policy, compiled.
pub enum RequestStep {
    /// Only clients in these ranges; others get 403.
    AllowSources(Box<[IpNet]>),
    /// Clients in these ranges get 403.
    DenySources(Box<[IpNet]>),
    /// Plain HTTP gets a 308 to https (ACME challenges excepted).
    RedirectHttps,
    /// Every request: a redirect to the expanded location.
    Redirect(Redirect),
    /// Every request: a redirect to its own URL with parts replaced.
    RedirectTo(RedirectTo),
    /// `/` exactly: 302 to this path.
    AppRoot(String),
    /// An OPTIONS from an allowed origin: 204 with the CORS headers.
    CorsPreflight(Arc<CompiledCors>),
}

/// Where ACME HTTP-01 challenges are answered: never redirected to https.
const ACME_CHALLENGES: &str = "/.well-known/acme-challenge/";

/// What a request step sees of the request.
pub struct RequestFacts<'a> {
    pub req: &'a RequestHeader,
    /// The normalized host the route was found for.
    pub host: &'a str,
    /// The host as the client wrote it (with its port, if any).
    pub authority: &'a str,
    pub peer: Option<IpAddr>,
    pub tls: bool,
    pub trusted_proxies: &'a [IpNet],
    /// The HTTPS listener's port, for redirects.
    pub https_port: Option<u16>,
    /// The port the request arrived on, for redirects that keep it.
    pub local_port: Option<u16>,
}

/// An answer the proxy gives itself, instead of forwarding.
pub struct Reply {
    pub status: u16,
    pub body: Cow<'static, str>,
    pub location: Option<String>,
    /// More headers (a CORS preflight's).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Reply {
    pub fn text(status: u16, body: &'static str) -> Self {
        Reply {
            status,
            body: Cow::Borrowed(body),
            location: None,
            headers: Vec::new(),
        }
    }

    fn redirect(status: u16, body: &'static str, location: String) -> Self {
        Reply {
            location: Some(location),
            ..Reply::text(status, body)
        }
    }
}

impl RequestStep {
    /// `Some` answers the request here.
    pub fn check(&self, facts: &RequestFacts) -> Option<Reply> {
        match self {
            // An unknown client address passes neither list.
            RequestStep::DenySources(deny) => (client_in(facts, deny) != Some(false))
                .then(|| Reply::text(403, "this address may not use this route\n")),
            RequestStep::AllowSources(allow) => (client_in(facts, allow) != Some(true))
                .then(|| Reply::text(403, "this address may not use this route\n")),
            RequestStep::RedirectHttps => {
                let acme = facts.req.uri.path().starts_with(ACME_CHALLENGES);
                (!facts.tls && !acme).then(|| {
                    let location = https_location(facts.host, facts.https_port, facts.req);
                    Reply::redirect(308, "redirecting to https\n", location)
                })
            }
            RequestStep::Redirect(r) => Some(Reply::redirect(
                r.code,
                "redirecting\n",
                expand_location(&r.location, facts),
            )),
            RequestStep::RedirectTo(r) => Some(Reply::redirect(
                r.code,
                "redirecting\n",
                redirect_location(r, facts),
            )),
            RequestStep::AppRoot(root) => (facts.req.uri.path() == "/").then(|| {
                let scheme = if facts.tls { "https" } else { "http" };
                let location = format!("{scheme}://{}{root}", facts.authority);
                Reply::redirect(302, "redirecting\n", location)
            }),
            // ingress-nginx answers every OPTIONS from an allowed origin.
            RequestStep::CorsPreflight(cors) => {
                if facts.req.method != http::Method::OPTIONS {
                    return None;
                }
                let origin = cors.allowed_origin(facts.req)?;
                let mut reply = Reply::text(204, "");
                reply.headers.extend(cors.headers(origin));
                Some(reply)
            }
        }
    }
}

/// Whether the request's client (the peer, or behind `trusted_proxies` the
/// forwarded one) is in `nets`; `None` when no address is known.
fn client_in(facts: &RequestFacts, nets: &[IpNet]) -> Option<bool> {
    let client = crate::forwarding::client_ip(facts.req, facts.peer, facts.trusted_proxies)?;
    Some(nets.iter().any(|n| net_contains(n, client)))
}

/// A route's CORS, compiled: the origin rule and the headers' values.
pub struct CompiledCors {
    origins: Origins,
    /// Credentials, methods, headers, expose, max age, in that order.
    headers: Box<[(http::HeaderName, http::HeaderValue)]>,
}

enum Origins {
    /// Any, answered `*`.
    Any,
    Matching(regex::Regex),
    Nothing,
}

impl CompiledCors {
    fn new(cors: &crate::route::Cors) -> Self {
        use http::header;
        let origins = match cors.allow_origins.as_slice() {
            [any] if any == "*" => Origins::Any,
            [] => Origins::Nothing,
            list => {
                // ingress-nginx: each origin quoted, its `*` one DNS label.
                let alternatives: Vec<String> = list
                    .iter()
                    .map(|o| regex::escape(o).replacen(r"\*", r"[A-Za-z0-9\-]+", 1))
                    .collect();
                let pattern = format!("(?i)^(?:{})$", alternatives.join("|"));
                regex::Regex::new(&pattern).map_or(Origins::Nothing, Origins::Matching)
            }
        };
        let mut headers = Vec::new();
        let mut add = |name: header::HeaderName, value: &str| {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.push((name, v));
            }
        };
        if cors.allow_credentials {
            add(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        add(header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods);
        add(header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers);
        if !cors.expose_headers.is_empty() {
            add(header::ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose_headers);
        }
        add(header::ACCESS_CONTROL_MAX_AGE, &cors.max_age.to_string());
        CompiledCors {
            origins,
            headers: headers.into(),
        }
    }

    /// The `Access-Control-Allow-Origin` for this request: `*`, or its own
    /// `Origin` when that is allowed; `None`: not a cross-origin request we
    /// allow (no CORS headers at all, as there).
    pub fn allowed_origin(&self, req: &RequestHeader) -> Option<http::HeaderValue> {
        match &self.origins {
            Origins::Any => Some(http::HeaderValue::from_static("*")),
            Origins::Matching(allowed) => {
                let origin = req.headers.get(http::header::ORIGIN)?;
                allowed
                    .is_match(origin.to_str().ok()?)
                    .then(|| origin.clone())
            }
            Origins::Nothing => None,
        }
    }

    /// Every CORS header, with `origin` as the allowed one.
    pub fn headers(
        &self,
        origin: http::HeaderValue,
    ) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> + '_ {
        std::iter::once((http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .chain(self.headers.iter().cloned())
    }
}

/// Expand nginx's `$name` variables in `template` (a name is letters, digits
/// and `_`, as nginx reads it): `value` writes a known one's value and says
/// so; an unknown one stays as written.
fn expand_variables(template: &str, mut value: impl FnMut(&str, &mut Vec<u8>) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        rest = &rest[at + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        rest = after;
        if !value(name, &mut out) {
            out.push(b'$');
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// nginx's variables in a redirect's location: `$scheme`, `$host`,
/// `$http_host`, `$request_uri`, `$uri`, `$args`, `$query_string`.
pub fn expand_location(template: &str, facts: &RequestFacts) -> String {
    if !template.contains('$') {
        return template.to_string();
    }
    let uri = &facts.req.uri;
    let expanded = expand_variables(template, |name, out| {
        let value = match name {
            "query_string" | "args" => uri.query().unwrap_or(""),
            "request_uri" => uri.path_and_query().map_or("/", |p| p.as_str()),
            "escaped_request_uri" => {
                let raw = uri.path_and_query().map_or("/", |p| p.as_str());
                percent_encode(raw.as_bytes(), out);
                return true;
            }
            "http_host" => facts.authority,
            "scheme" | "pass_access_scheme" if facts.tls => "https",
            "scheme" | "pass_access_scheme" => "http",
            "host" => facts.host,
            "uri" => uri.path(),
            _ => return false,
        };
        out.extend_from_slice(value.as_bytes());
        true
    });
    // Made of the template's text and the request's (UTF-8) parts.
    String::from_utf8_lossy(&expanded).into_owned()
}

/// Everything but RFC 3986's unreserved characters as `%XX`, as a query
/// parameter's value needs it.
fn percent_encode(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// The bytes a consistent-hash key template names for this request:
/// `$request_uri`, `$uri`, `$args`, `$host`, `$remote_addr` (and
/// `$binary_remote_addr`), `$http_NAME` (a header, `_` for `-`),
/// `$cookie_NAME`, `$arg_NAME`; other text as written.
pub fn hash_key(template: &str, req: &RequestHeader, client: Option<IpAddr>) -> Vec<u8> {
    let uri = &req.uri;
    expand_variables(template, |name, out| {
        match name {
            "request_uri" => {
                out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes())
            }
            "uri" => out.extend_from_slice(uri.path().as_bytes()),
            "args" | "query_string" => out.extend_from_slice(uri.query().unwrap_or("").as_bytes()),
            "host" => out.extend_from_slice(
                req.headers
                    .get(http::header::HOST)
                    .map_or(&b""[..], |h| h.as_bytes()),
            ),
            "remote_addr" | "binary_remote_addr" => {
                if let Some(ip) = client {
                    out.extend_from_slice(ip.to_string().as_bytes());
                }
            }
            _ => {
                let value = if let Some(header) = name.strip_prefix("http_") {
                    req.headers
                        .get(header.replace('_', "-").as_str())
                        .map(|v| v.as_bytes())
                } else if let Some(cookie) = name.strip_prefix("cookie_") {
                    cookie_value(req, cookie)
                } else if let Some(arg) = name.strip_prefix("arg_") {
                    query_value(uri.query().unwrap_or(""), arg)
                } else {
                    return false;
                };
                out.extend_from_slice(value.unwrap_or(b""));
            }
        }
        true
    })
}

/// The value of cookie `name` in the request's `Cookie` headers, read as the
/// affinity cookie is (`affinity::find_cookie`).
fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|h| find_cookie(h.as_bytes(), name))
}

/// A route's rewrite, compiled.
pub struct CompiledRewrite {
    regex: regex::Regex,
    target: String,
}

impl CompiledRewrite {
    /// The new path and query for `path` and `query`, when the pattern matches.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let groups = self.regex.captures(path)?;
        let mut out = String::with_capacity(self.target.len() + path.len());
        let mut chars = self.target.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                ('$', Some(n)) => {
                    chars.next();
                    out.push_str(groups.get(n as usize).map_or("", |m| m.as_str()));
                }
                _ => out.push(c),
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        // nginx keeps the query: after the target's own, or alone; a target
        // ending in `?` drops it.
        match (out.strip_suffix('?'), query) {
            (Some(without), _) => out = without.to_string(),
            (None, Some(q)) if !q.is_empty() => {
                out.push(if out.contains('?') { '&' } else { '?' });
                out.push_str(q);
            }
            (None, _) => {}
        }
        Some(out)
    }
}

/// A route's canary rules, compiled: whether a request goes to the canary
/// (backend 1) rather than the main backend (0).
pub struct CanaryRules {
    header: Option<http::HeaderName>,
    header_value: Option<String>,
    header_pattern: Option<regex::Regex>,
    cookie: Option<String>,
    weight: u32,
    weight_total: u32,
    /// The weighted split's turn (exact shares, kept across snapshots).
    turn: Arc<AtomicU32>,
}

impl CanaryRules {
    /// ingress-nginx's precedence: header, then cookie, then weight.
    pub fn to_canary(&self, req: &RequestHeader) -> bool {
        if let Some(name) = &self.header {
            if let Some(v) = req.headers.get(name).map(|v| v.as_bytes()) {
                if let Some(want) = &self.header_value {
                    if v == want.as_bytes() {
                        return true;
                    }
                } else if let Some(pattern) = &self.header_pattern {
                    if std::str::from_utf8(v).is_ok_and(|v| pattern.is_match(v)) {
                        return true;
                    }
                } else if v == b"always" {
                    return true;
                } else if v == b"never" {
                    return false;
                }
            }
        }
        if let Some(name) = &self.cookie {
            match cookie_value(req, name) {
                Some(b"always") => return true,
                Some(b"never") => return false,
                _ => {}
            }
        }
        self.weight > 0
            && self.turn.fetch_add(1, Ordering::Relaxed) % self.weight_total.max(1) < self.weight
    }
}

/// Gateway API's RequestRedirect: the request's URL with the parts given
/// replaced. Without a port: the scheme's well-known one when the scheme is
/// given, else the port the request came to; 80 for http and 443 for https
/// are left out of the URL.
pub fn redirect_location(r: &RedirectTo, facts: &RequestFacts) -> String {
    let own_scheme = if facts.tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(own_scheme);
    let host = r.hostname.as_deref().unwrap_or(facts.host);
    let port = r.port.or_else(|| match &r.scheme {
        Some(s) if s == "https" => Some(443),
        Some(_) => Some(80),
        None => facts.local_port,
    });
    let port = match (scheme, port) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => String::new(),
        (_, Some(p)) => format!(":{p}"),
    };
    let uri = &facts.req.uri;
    let path = match &r.path {
        Some(change) => Cow::Owned(change_path(change, uri.path())),
        None => Cow::Borrowed(uri.path()),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{path}{query}")
}

/// A path with Gateway API's HTTPPathModifier applied (the path matched the
/// route, so a `Prefix` change's prefix is there by whole elements).
pub fn change_path(change: &PathChange, path: &str) -> String {
    match change {
        PathChange::Full(full) => full.clone(),
        PathChange::Prefix { prefix, with } => {
            let rest = match prefix.as_str() {
                "/" => path,
                p => path.get(p.len()..).unwrap_or(""),
            };
            let mut out = with.trim_end_matches('/').to_string();
            if !rest.is_empty() && !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
    }
}

/// Header changes, compiled: names and values checked once.
pub struct CompiledHeaderChanges {
    set: Box<[(http::HeaderName, http::HeaderValue)]>,
    add: Box<[(http::HeaderName, http::HeaderValue)]>,
    remove: Box<[http::HeaderName]>,
}

impl CompiledHeaderChanges {
    fn new(changes: &HeaderChanges) -> Self {
        CompiledHeaderChanges {
            set: header_pairs(&changes.set).collect(),
            add: header_pairs(&changes.add).collect(),
            remove: changes
                .remove
                .iter()
                .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    /// Set, then add, then remove, through the message's own methods.
    pub fn apply<M>(
        &self,
        message: &mut M,
        insert: impl Fn(&mut M, http::HeaderName, http::HeaderValue) -> pingora::Result<()>,
        append: impl Fn(&mut M, http::HeaderName, http::HeaderValue) -> pingora::Result<()>,
        remove: impl Fn(&mut M, &http::HeaderName),
    ) -> pingora::Result<()> {
        for (name, value) in self.set.iter() {
            insert(message, name.clone(), value.clone())?;
        }
        for (name, value) in self.add.iter() {
            append(message, name.clone(), value.clone())?;
        }
        for name in self.remove.iter() {
            remove(message, name);
        }
        Ok(())
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
    /// The share answered 500 ([`Policy::InvalidBackends`]), after `total`.
    invalid: u32,
    /// Which share the next new request takes: state that outlives a snapshot
    /// (kept by route name), so a reload does not restart the split.
    turn: Arc<AtomicU32>,
    /// With several shares: the backend (its index; `list.len()` for the
    /// invalid share) of each turn of one cycle, interleaved as nginx's smooth
    /// weighted round robin orders them (90:10 is nine, one, nine, one...).
    /// Empty when the cycle is too long to lay out: then shares follow each
    /// other, still exact per cycle.
    schedule: Box<[u16]>,
}

/// The longest cycle laid out in a schedule (after dividing the weights by
/// their greatest common divisor): 4 KiB per route at most.
const SCHEDULE_MAX: u32 = 4096;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin over `weights`, one cycle.
fn smooth_schedule(weights: &[u32]) -> Box<[u16]> {
    let divisor = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let cycle: i64 = weights.iter().sum();
    if weights.len() < 2 || cycle > i64::from(SCHEDULE_MAX) || weights.len() > usize::from(u16::MAX)
    {
        return Box::new([]);
    }
    let mut current = vec![0i64; weights.len()];
    (0..cycle)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by_key(|i| (current[*i], std::cmp::Reverse(*i)))
                .unwrap_or(0);
            current[best] -= cycle;
            best as u16
        })
        .collect()
}

impl Backends {
    pub fn new(list: Vec<(Arc<Upstream>, u32)>, invalid: u32, turn: Arc<AtomicU32>) -> Self {
        let list: Box<[_]> = list.into_iter().filter(|(_, w)| *w > 0).collect();
        let total = list.iter().map(|(_, w)| *w).sum();
        let mut weights: Vec<u32> = list.iter().map(|(_, w)| *w).collect();
        if invalid > 0 {
            weights.push(invalid);
        }
        Backends {
            schedule: smooth_schedule(&weights),
            list,
            total,
            invalid,
            turn,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether part of the split is answered 500.
    pub fn has_invalid_share(&self) -> bool {
        self.invalid > 0
    }

    /// For a route with an invalid share: the backend of a new request, or
    /// `None` for a request of the invalid share.
    pub fn pick_or_invalid(&self) -> Option<usize> {
        let i = self.next();
        (i < self.list.len()).then_some(i)
    }

    /// The next turn's backend (`list.len()`: the invalid share).
    fn next(&self) -> usize {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        if !self.schedule.is_empty() {
            return usize::from(self.schedule[turn as usize % self.schedule.len()]);
        }
        let mut slot = turn % (self.total + self.invalid).max(1);
        for (i, (_, weight)) in self.list.iter().enumerate() {
            if slot < *weight {
                return i;
            }
            slot -= weight;
        }
        self.list.len()
    }

    /// The first backend: whose readiness a 503 speaks of.
    pub fn primary(&self) -> Option<&Arc<Upstream>> {
        self.get(0)
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.list.get(index).map(|(u, _)| u)
    }

    /// The backend (its index) for a new request, by weight: each takes its
    /// exact share of every cycle of requests, spread over it.
    pub fn pick(&self) -> Option<usize> {
        if self.list.len() <= 1 {
            return (!self.list.is_empty()).then_some(0);
        }
        Some(self.next().min(self.list.len() - 1))
    }

    /// The backend (its index) that knows the endpoint an affinity cookie
    /// names: a pinned client stays on its side of a weighted split.
    pub fn holding(&self, id: crate::affinity::EndpointId) -> Option<usize> {
        match &*self.list {
            [_] => Some(0),
            list => list.iter().position(|(u, _)| u.knows(id)),
        }
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
    let mut rewrite = None;
    let mut set_headers = Vec::new();
    let mut response_headers = Vec::new();
    let mut canary = None;
    let mut hash_by = None;
    let mut protocol = None;
    let mut least_loaded = false;
    let mut error_backend = None;
    let mut cors = None;
    let mut auth = None;
    let mut client_limits = None;
    let mut response_rate = None;
    let mut basic_auth = None;
    let mut request_changes = None;
    let mut response_changes = None;
    let mut rewrite_url = None;
    let mut invalid_weight = 0;
    let mut request_timeout = None;
    let mut mirrors = Vec::new();
    for policy in &route.policies {
        match policy {
            Policy::AllowSources(nets) => {
                request.push(RequestStep::AllowSources(nets.clone().into()));
            }
            Policy::DenySources(nets) => {
                request.push(RequestStep::DenySources(nets.clone().into()));
            }
            Policy::RedirectHttps => request.push(RequestStep::RedirectHttps),
            Policy::Redirect(r) => request.push(RequestStep::Redirect(r.clone())),
            Policy::RedirectTo(r) => request.push(RequestStep::RedirectTo(r.clone())),
            Policy::RewriteUrl(r) => rewrite_url = Some(Box::new(r.clone())),
            Policy::InvalidBackends(w) => invalid_weight = *w,
            Policy::Mirror(list) => mirrors.extend(list.iter().map(|m| {
                crate::mirror::CompiledMirror::new(
                    upstream(&m.upstream),
                    m.numerator,
                    m.denominator,
                )
            })),
            Policy::ModifyRequestHeaders(c) => {
                request_changes = Some(Box::new(CompiledHeaderChanges::new(c)))
            }
            Policy::ModifyResponseHeaders(c) => {
                response_changes = Some(Box::new(CompiledHeaderChanges::new(c)))
            }
            Policy::AppRoot(root) => request.push(RequestStep::AppRoot(root.clone())),
            // Sources check patterns, names and values before they get here;
            // one that slipped through is left out rather than served wrong.
            Policy::Rewrite(r) => {
                rewrite =
                    crate::route::rewrite_regex(&r.pattern)
                        .ok()
                        .map(|regex| CompiledRewrite {
                            regex,
                            target: r.target.clone(),
                        });
            }
            Policy::SetRequestHeaders(headers) => set_headers.extend(header_pairs(headers)),
            Policy::SetResponseHeaders(headers) => response_headers.extend(header_pairs(headers)),
            Policy::HashBy(h) => hash_by = Some(h.clone()),
            Policy::UpstreamProtocol(p) => protocol = Some(p.clone()),
            Policy::LeastLoaded => least_loaded = true,
            Policy::Canary(c) => {
                canary = Some(CanaryRules {
                    header: c
                        .header
                        .as_deref()
                        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
                    header_value: c.header_value.clone(),
                    header_pattern: c
                        .header_pattern
                        .as_deref()
                        .and_then(|p| crate::route::value_regex(p).ok()),
                    cookie: c.cookie.clone(),
                    weight: c.weight,
                    weight_total: c.weight_total,
                    turn: turn.clone(),
                });
            }
            Policy::MaxBodyBytes(n) => max_body_bytes = *n,
            Policy::Timeouts(t) => {
                timeouts.connect = t.connect.unwrap_or(timeouts.connect);
                timeouts.read = t.read.unwrap_or(timeouts.read);
                timeouts.write = t.write.unwrap_or(timeouts.write);
                request_timeout = t.request;
            }
            Policy::Affinity(a) => affinity = Some(a.clone()),
            Policy::ExternalAuth(a) => auth = Some(crate::auth::CompiledAuth::new(a)),
            Policy::BasicAuth(b) => {
                basic_auth = Some(crate::auth::basic::CompiledBasicAuth::new(b))
            }
            Policy::ClientLimits(l) => {
                client_limits = Some(ClientLimits::zone(
                    &l.zone,
                    l.rates.iter().map(gcra_rate).collect(),
                    l.connections,
                    l.exempt.clone(),
                    config.limits.limited_status,
                ));
            }
            Policy::ResponseRate(r) => response_rate = Some(*r),
            Policy::Cors(c) => {
                let compiled = Arc::new(CompiledCors::new(c));
                request.push(RequestStep::CorsPreflight(compiled.clone()));
                cors = Some(compiled);
            }
            Policy::ErrorBackend(e) => {
                error_backend = Some(CompiledErrorBackend {
                    upstream: upstream(&e.upstream),
                    intercept: e.intercept.clone().into(),
                })
            }
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
    let backends: Vec<(Arc<Upstream>, u32)> = route
        .backends
        .iter()
        .map(|b| (upstream(&b.upstream), b.weight))
        .collect();
    if hash_by.is_some() {
        for (u, _) in &backends {
            u.use_ring();
        }
    }
    CompiledRoute {
        name: route.name.clone(),
        origin: route.origin.clone(),
        host,
        service,
        request: request.into(),
        max_body_bytes,
        timeouts,
        request_timeout,
        affinity,
        backends: Backends::new(backends, invalid_weight, turn),
        rewrite,
        set_headers: set_headers.into(),
        response_headers: response_headers.into(),
        request_changes,
        response_changes,
        rewrite_url,
        mirrors: mirrors.into(),
        canary,
        hash_by,
        least_loaded,
        upstream_tls: UpstreamTls::new(protocol.as_ref().and_then(|p| p.trust.as_deref())),
        protocol,
        error_backend,
        cors,
        auth,
        basic_auth,
        client_limits,
        response_rate,
        metrics,
    }
}

/// A rate of the route model as the limiter counts it.
pub fn gcra_rate(rate: &crate::route::RequestRate) -> crate::client_limits::Rate {
    crate::client_limits::Rate::new(rate.requests, rate.per, rate.burst)
}

/// How long to hold back a response body chunk so that the `sent` bytes of
/// the body so far (this chunk's included) go no faster than `rate` after
/// its first `after_bytes`, `elapsed` after the body started.
pub fn response_delay(
    rate: &crate::route::ResponseRate,
    sent: u64,
    elapsed: std::time::Duration,
) -> Option<std::time::Duration> {
    let limited = sent.checked_sub(rate.after_bytes).filter(|b| *b > 0)?;
    let due =
        std::time::Duration::from_secs_f64(limited as f64 / rate.bytes_per_second.max(1) as f64);
    due.checked_sub(elapsed).filter(|d| !d.is_zero())
}

fn header_pairs(
    headers: &[(String, String)],
) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> + '_ {
    headers.iter().filter_map(|(name, value)| {
        Some((
            http::HeaderName::from_bytes(name.as_bytes()).ok()?,
            http::HeaderValue::from_str(value).ok()?,
        ))
    })
}

/// A route's CA and client certificate for TLS to its endpoints.
#[derive(Default)]
pub struct UpstreamTls {
    /// Instead of the system's roots.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    pub client_cert: Option<Arc<pingora::utils::tls::CertKey>>,
}

impl UpstreamTls {
    fn new(trust: Option<&crate::route::UpstreamTrust>) -> Self {
        use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
        let Some(trust) = trust else {
            return UpstreamTls::default();
        };
        // Translation parsed every certificate (pingora's parser panics on
        // a bad one): the filter is a second guard, not the check.
        let parses = |der: &Vec<u8>| x509_parser::parse_x509_certificate(der).is_ok();
        let ca: Vec<WrappedX509> = trust
            .ca
            .iter()
            .filter(|der| parses(der))
            .map(|der| WrappedX509::new(der.clone(), parse_x509))
            .collect();
        let client_cert = trust.client.as_ref().and_then(|(chain, key)| {
            (!chain.is_empty() && chain.iter().all(parses))
                .then(|| Arc::new(CertKey::new(chain.clone(), key.clone())))
        });
        UpstreamTls {
            ca: (!ca.is_empty()).then(|| Arc::from(ca)),
            client_cert,
        }
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

    #[test]
    fn response_rate_holds_back_only_what_runs_ahead() {
        use std::time::Duration;
        let rate = crate::route::ResponseRate {
            bytes_per_second: 1000,
            after_bytes: 500,
        };
        // Within the free bytes: no wait.
        assert_eq!(response_delay(&rate, 500, Duration::ZERO), None);
        // 1 500 bytes past them are due 1.5 s after the start.
        assert_eq!(
            response_delay(&rate, 2000, Duration::from_millis(500)),
            Some(Duration::from_secs(1))
        );
        // A slow client that is behind already waits no more.
        assert_eq!(response_delay(&rate, 2000, Duration::from_secs(2)), None);
    }

    fn upstream(service: &str) -> Arc<Upstream> {
        Arc::new(Upstream::new(UpstreamKey {
            namespace: "default".into(),
            service: service.into(),
            port: ServicePort::Number(80),
            cluster_ip: None,
        }))
    }

    #[test]
    fn weighted_backends_take_their_exact_shares_and_zero_takes_none() {
        let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
        let backends = Backends::new(
            vec![(a.clone(), 3), (b.clone(), 1), (c.clone(), 0)],
            0,
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
        assert!(Backends::new(vec![(c.clone(), 0)], 0, Arc::default())
            .pick()
            .is_none());
        // 90:10 spread: one in every ten to the smaller one.
        let split = Backends::new(vec![(a.clone(), 90), (b.clone(), 10)], 0, Arc::default());
        let picks: Vec<usize> = (0..100).map(|_| split.pick().unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 10);
        assert!(
            picks
                .chunks(10)
                .all(|c| c.iter().filter(|p| **p == 1).count() == 1),
            "{picks:?}"
        );
        // 70:30: never four in a row to either (a cycle of ten, interleaved).
        let split = Backends::new(vec![(a.clone(), 70), (b.clone(), 30)], 0, Arc::default());
        let picks: Vec<usize> = (0..10).map(|_| split.pick().unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 3);
        assert!(
            picks.windows(4).all(|w| w.contains(&0) && w.contains(&1)),
            "{picks:?}"
        );
        // An invalid share of 1 beside a weight of 3: a quarter is answered 500.
        let with_invalid = Backends::new(vec![(a, 3)], 1, Arc::default());
        let invalid = (0..400)
            .filter(|_| with_invalid.pick_or_invalid().is_none())
            .count();
        assert_eq!(invalid, 100);
    }

    #[test]
    fn gateway_path_changes_replace_whole_elements() {
        let prefix = |p: &str, w: &str| PathChange::Prefix {
            prefix: p.into(),
            with: w.into(),
        };
        // Gateway API conformance, HTTPRouteRewritePath's cases.
        assert_eq!(
            change_path(&prefix("/prefix/one", "/one"), "/prefix/one/two"),
            "/one/two"
        );
        assert_eq!(
            change_path(&prefix("/strip-prefix", "/"), "/strip-prefix/three"),
            "/three"
        );
        assert_eq!(
            change_path(&prefix("/strip-prefix", "/"), "/strip-prefix"),
            "/"
        );
        assert_eq!(
            change_path(&prefix("/prefix/one", "/one"), "/prefix/one"),
            "/one"
        );
        assert_eq!(change_path(&prefix("/", "/api"), "/x"), "/api/x");
        assert_eq!(
            change_path(&PathChange::Full("/one".into()), "/full/one/two"),
            "/one"
        );
    }

    #[tokio::test]
    async fn a_pinned_client_stays_on_the_backend_that_knows_its_endpoint() {
        let (a, b) = (upstream("a"), upstream("b"));
        let pod: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        b.publish(crate::upstream::EndpointSet::ready([pod])).await;
        let backends = Backends::new(vec![(a.clone(), 99), (b.clone(), 1)], 0, Arc::default());
        let id = b.endpoint_id(&pod);
        assert_eq!(backends.holding(id), Some(1));
        assert!(backends.holding(a.endpoint_id(&pod)).is_none());
    }
}

#[cfg(test)]
mod rewrite_and_redirect_tests {
    use super::*;

    fn rewrite(pattern: &str, target: &str) -> CompiledRewrite {
        CompiledRewrite {
            regex: crate::route::rewrite_regex(pattern).unwrap(),
            target: target.into(),
        }
    }

    #[test]
    fn rewrites_replace_the_whole_path_with_groups_and_keep_the_query() {
        // ingress-nginx's own example: path /something(/|$)(.*), target /$2.
        let r = rewrite("/something(/|$)(.*)", "/$2");
        assert_eq!(r.apply("/something", None).as_deref(), Some("/"));
        assert_eq!(r.apply("/something/", None).as_deref(), Some("/"));
        assert_eq!(
            r.apply("/something/new", Some("a=1")).as_deref(),
            Some("/new?a=1")
        );
        assert_eq!(
            r.apply("/SomeThing/x", None).as_deref(),
            Some("/x"),
            "case-insensitive"
        );
        assert_eq!(r.apply("/other", None), None);
        // A target with its own query; one ending in `?` drops the client's.
        let q = rewrite("/api/(.*)", "/v2/$1?source=edge");
        assert_eq!(
            q.apply("/api/users", Some("page=2")).as_deref(),
            Some("/v2/users?source=edge&page=2")
        );
        let drop = rewrite("/api/(.*)", "/$1?");
        assert_eq!(
            drop.apply("/api/users", Some("page=2")).as_deref(),
            Some("/users")
        );
        // No group: everything under the path becomes the target.
        assert_eq!(
            rewrite("/app", "/").apply("/app/deep/x", None).as_deref(),
            Some("/")
        );
    }

    #[test]
    fn redirect_locations_expand_nginx_variables() {
        let req = RequestHeader::build("GET", b"/a/b?x=1", None).unwrap();
        let facts = RequestFacts {
            req: &req,
            host: "shop.test",
            authority: "shop.test:8080",
            peer: None,
            tls: false,
            trusted_proxies: &[],
            https_port: None,
            local_port: None,
        };
        assert_eq!(
            expand_location("https://new.test$request_uri", &facts),
            "https://new.test/a/b?x=1"
        );
        assert_eq!(
            expand_location("$scheme://$host$uri?from=$args&$unknown", &facts),
            "http://shop.test/a/b?from=x=1&$unknown"
        );
        assert_eq!(
            expand_location("$scheme://$http_host/", &facts),
            "http://shop.test:8080/"
        );
        assert_eq!(
            expand_location("https://plain.test", &facts),
            "https://plain.test"
        );
    }

    #[test]
    fn canary_rules_in_ingress_nginx_precedence() {
        let rules = |header_value: Option<&str>, weight: u32| CanaryRules {
            header: Some(http::HeaderName::from_static("x-canary")),
            header_value: header_value.map(String::from),
            header_pattern: None,
            cookie: Some("canary".into()),
            weight,
            weight_total: 100,
            turn: Arc::default(),
        };
        let req = |headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for (n, v) in headers {
                r.insert_header(n.to_string(), *v).unwrap();
            }
            r
        };
        let plain = rules(None, 0);
        assert!(plain.to_canary(&req(&[("x-canary", "always")])));
        assert!(!plain.to_canary(&req(&[("x-canary", "never"), ("cookie", "canary=always")])));
        assert!(plain.to_canary(&req(&[
            ("x-canary", "maybe"),
            ("cookie", "a=b; canary=always")
        ])));
        assert!(!plain.to_canary(&req(&[("cookie", "canary=never")])));
        assert!(!plain.to_canary(&req(&[])), "weight 0: never by weight");
        let valued = rules(Some("v2"), 0);
        assert!(valued.to_canary(&req(&[("x-canary", "v2")])));
        assert!(
            !valued.to_canary(&req(&[("x-canary", "always")])),
            "the value replaces always"
        );
        // Weight: exact shares over each 100.
        let split = rules(None, 30);
        let n = (0..1000).filter(|_| split.to_canary(&req(&[]))).count();
        assert_eq!(n, 300);
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;
    use crate::route::{ServicePort, UpstreamKey};

    #[test]
    fn hash_keys_read_nginx_variables() {
        let mut req = RequestHeader::build("GET", b"/p?id=7&x=1", None).unwrap();
        req.insert_header("x-user", "alice").unwrap();
        req.insert_header("cookie", "a=1; sid=s-9").unwrap();
        req.insert_header("host", "h.test").unwrap();
        let ip = Some("10.1.2.3".parse().unwrap());
        let key = |t: &str| String::from_utf8(hash_key(t, &req, ip)).unwrap();
        assert_eq!(key("$request_uri"), "/p?id=7&x=1");
        assert_eq!(key("$uri|$args"), "/p|id=7&x=1");
        assert_eq!(key("$http_x_user"), "alice");
        assert_eq!(key("$cookie_sid"), "s-9");
        assert_eq!(key("$arg_id"), "7");
        assert_eq!(key("$remote_addr"), "10.1.2.3");
        assert_eq!(key("$host$uri"), "h.test/p");
        assert_eq!(key("$unknown-x"), "$unknown-x");
    }

    #[tokio::test]
    async fn a_key_keeps_its_endpoint_and_moves_only_when_that_endpoint_goes() {
        let upstream = Upstream::new(UpstreamKey {
            namespace: "default".into(),
            service: "web".into(),
            port: ServicePort::Number(80),
            cluster_ip: None,
        });
        let addrs: Vec<std::net::SocketAddr> = (1..=4)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        upstream.use_ring();
        upstream
            .publish(crate::upstream::EndpointSet::ready(addrs.clone()))
            .await;
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| upstream.pick_hashed(k.as_bytes(), &[], 1).unwrap())
            .collect();
        let used: std::collections::BTreeSet<_> = before.iter().collect();
        assert_eq!(used.len(), 4, "keys spread over every endpoint");
        // One endpoint leaves: only its keys move.
        upstream
            .publish(crate::upstream::EndpointSet::ready(addrs[1..].to_vec()))
            .await;
        for (k, was) in keys.iter().zip(&before) {
            let now = upstream.pick_hashed(k.as_bytes(), &[], 1).unwrap();
            if *was != addrs[0] {
                assert_eq!(now, *was, "{k} moved");
            } else {
                assert_ne!(now, addrs[0]);
            }
        }
        // A tried endpoint is skipped: the next on the ring takes the key.
        let first = upstream.pick_hashed(b"user-1", &[], 1).unwrap();
        assert_ne!(upstream.pick_hashed(b"user-1", &[first], 1), Some(first));
        // A subset of 2: each key spreads over exactly two endpoints, the
        // same two every time.
        for k in keys.iter().take(20) {
            let seen: std::collections::BTreeSet<_> = (0..8)
                .map(|_| upstream.pick_hashed(k.as_bytes(), &[], 2).unwrap())
                .collect();
            assert_eq!(seen.len(), 2, "{k}: {seen:?}");
            let again: std::collections::BTreeSet<_> = (0..8)
                .map(|_| upstream.pick_hashed(k.as_bytes(), &[], 2).unwrap())
                .collect();
            assert_eq!(seen, again, "{k}");
        }
    }
}
