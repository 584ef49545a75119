//! The route model every source translates into: the configuration file,
//! Ingresses and Gateway API. Nothing here knows where a route came
//! from beyond its [`Origin`]; nothing below this line (the snapshot, the
//! request path) knows any source's own types.
//!
//! A [`Route`] is what it matches ([`Match`]: host, path, method, headers,
//! query parameters), where it sends requests (weighted [`Backend`]s, each one
//! port of one Service) and an ordered list of typed [`Policy`]s that act on
//! the request and the response. `state.rs` compiles each route once per
//! snapshot into what the request path runs (`policy.rs`).
//!
//! See docs/architecture.md for where a new source or policy goes.

pub mod router;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use ipnet::IpNet;
pub use router::{normalize_host, Router};

/// One route, from any source.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// A short stable name for logs and metrics: `routes[0]`,
    /// `ingress:NAMESPACE/NAME:rules[0].paths[1]`.
    pub name: String,
    pub origin: Origin,
    pub matches: Match,
    /// Where requests go, by weight. No backend with a weight above zero: the
    /// route answers 500 (Gateway API's rule for a rule without backends).
    pub backends: Vec<Backend>,
    /// Applied in this order (see [`Policy`]).
    pub policies: Vec<Policy>,
}

impl Route {
    /// Every upstream the route may send to: its backends, the error
    /// backend of [`Policy::ErrorBackend`] and the mirrors of [`Policy::Mirror`].
    pub fn upstreams(&self) -> impl Iterator<Item = &UpstreamKey> {
        let others = self.policies.iter().flat_map(|p| match p {
            Policy::ErrorBackend(e) => vec![&e.upstream],
            Policy::Mirror(m) => m.iter().map(|m| &m.upstream).collect(),
            _ => Vec::new(),
        });
        self.backends.iter().map(|b| &b.upstream).chain(others)
    }

    /// A route to one backend without policies: the common case.
    pub fn to(
        name: impl Into<String>,
        origin: Origin,
        matches: Match,
        upstream: UpstreamKey,
    ) -> Self {
        Route {
            name: name.into(),
            origin,
            matches,
            backends: vec![Backend {
                upstream,
                weight: 1,
            }],
            policies: Vec::new(),
        }
    }

    /// The affinity policy, if the route has one.
    pub fn affinity(&self) -> Option<&Affinity> {
        self.policies.iter().find_map(|p| match p {
            Policy::Affinity(a) => Some(a),
            _ => None,
        })
    }
}

/// Where a route came from, and so how it ranks when two routes claim the
/// same match: a route of the configuration file wins over any other; between
/// objects (Ingresses, HTTPRoutes), the older wins (creation time, then the
/// object's name), as ingress-nginx and Gateway API order them. Every node
/// computes the same order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The configuration file (ConfigMap).
    File,
    /// A Kubernetes object: `kind` names the source (`Ingress`, `HTTPRoute`).
    Object {
        /// Seconds since the epoch of `metadata.creationTimestamp`.
        created: i64,
        /// `NAMESPACE/NAME`.
        id: String,
        kind: &'static str,
    },
}

impl Origin {
    /// The object, as problems and conflicts name it (`the configuration file`
    /// or `Ingress default/web`).
    pub fn describe(&self) -> String {
        match self {
            Origin::File => "the configuration file".into(),
            Origin::Object { kind, id, .. } => format!("{kind} {id}"),
        }
    }

    /// `NAMESPACE/NAME` of the object, or `-` for the file.
    pub fn object(&self) -> &str {
        match self {
            Origin::File => "-",
            Origin::Object { id, .. } => id,
        }
    }
}

/// What a request must be for a route to serve it. Host and path select the
/// candidates (see [`router`]); method, headers and query parameters then
/// choose between candidates of the same host and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Match {
    pub host: HostMatch,
    /// Exact, normalized Prefix (no trailing slash but for "/"), or a regular
    /// expression anchored at the start of the path.
    pub path: String,
    pub path_type: PathType,
    /// An HTTP method, uppercase; `None`: any.
    pub method: Option<String>,
    /// Every one must hold. Names lowercase.
    pub headers: Vec<ValueMatch>,
    /// Every one must hold.
    pub query: Vec<ValueMatch>,
    /// Only requests over TLS (`Some(true)`) or plain HTTP (`Some(false)`):
    /// a Gateway API route attached to one listener only; `None`: both.
    pub tls: Option<bool>,
}

impl Match {
    /// A match on host and path only.
    pub fn path(host: HostMatch, path: impl Into<String>, path_type: PathType) -> Self {
        Match {
            host,
            path: path.into(),
            path_type,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            tls: None,
        }
    }

    /// Whether anything beyond host and path is asked.
    pub fn has_conditions(&self) -> bool {
        self.method.is_some()
            || !self.headers.is_empty()
            || !self.query.is_empty()
            || self.tls.is_some()
    }
}

/// One header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StringMatch {
    Exact(String),
    /// A regular expression (the `regex` crate's syntax) the whole value must match.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// A lowercase host name.
    Exact(String),
    /// `*.example.com` as an Ingress writes it: holds "example.com";
    /// matches exactly one more label.
    Wildcard(String),
    /// `*.example.com` as Gateway API writes it: holds "example.com";
    /// matches one or more labels more (`a.example.com`, `a.b.example.com`).
    Suffix(String),
    /// No host given: any host that no other route names.
    Any,
}

/// As written in a route: `www.example.com`, `*.example.com`, or `*` for any host.
impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(d) | HostMatch::Suffix(d) => write!(f, "*.{d}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathType {
    Prefix,
    Exact,
    /// A regular expression matched from the start of the path, case-insensitively
    /// (ingress-nginx's `use-regex`); linear time (the `regex` crate).
    Regex,
}

/// A regular expression for a path: anchored at the start, case-insensitive,
/// or why it does not compile.
pub fn path_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("{pattern:?} is not a regular expression: {e}"))
}

/// A regular expression a whole header or query value must match.
pub fn value_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("{pattern:?} is not a regular expression: {e}"))
}

/// One backend of a route: a Service port and its share of new requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub upstream: UpstreamKey,
    /// Relative; 0 takes nothing.
    pub weight: u32,
}

/// What a backend forwards to: one port of one Service. Routes naming the same
/// key share one set of endpoints, one balancer and one connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamKey {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    /// The Service's ClusterIP and port, sent to instead of its endpoints
    /// (ingress-nginx's `service-upstream`); `None`: the endpoints.
    pub cluster_ip: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

impl fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePort::Number(n) => write!(f, "{n}"),
            ServicePort::Name(name) => f.write_str(name),
        }
    }
}

/// Something a route does besides forwarding. Request policies run in the
/// order of the route's list, and the first that answers ends the request
/// (an allowlist's 403 before a redirect before a body-size 413, say).
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Only clients in these ranges; others get 403. Empty: nobody (an
    /// allowlist that did not parse fails closed).
    AllowSources(Vec<IpNet>),
    /// Clients in these ranges get 403 (ingress-nginx's `denylist-source-range`).
    DenySources(Vec<IpNet>),
    /// Plain-HTTP requests get a 308 to the same URL on https, except those
    /// under `/.well-known/acme-challenge/` (an ACME HTTP-01 check must reach
    /// its solver over plain HTTP).
    RedirectHttps,
    /// Every request is answered with a redirect instead of being forwarded.
    Redirect(Redirect),
    /// A request for `/` exactly is sent (302) to this path (ingress-nginx's
    /// `app-root`).
    AppRoot(String),
    /// The path sent upstream is rewritten (see [`Rewrite`]).
    Rewrite(Rewrite),
    /// Headers set on the request sent upstream (replacing the client's).
    SetRequestHeaders(Vec<(String, String)>),
    /// Headers set on the response sent to the client (replacing the
    /// endpoint's): ingress-nginx's `custom-headers`.
    SetResponseHeaders(Vec<(String, String)>),
    /// Headers set, added and removed on the request sent upstream (Gateway
    /// API's RequestHeaderModifier); after [`Policy::SetRequestHeaders`].
    ModifyRequestHeaders(HeaderChanges),
    /// The same on the response sent to the client (ResponseHeaderModifier).
    ModifyResponseHeaders(HeaderChanges),
    /// Every request is answered with a redirect built from its own URL
    /// (Gateway API's RequestRedirect).
    RedirectTo(RedirectTo),
    /// The host and path sent upstream are replaced (Gateway API's URLRewrite).
    RewriteUrl(RewriteUrl),
    /// This weight of the route's split is answered 500: Gateway API's rule
    /// for backends that could not be resolved (beside the valid ones).
    InvalidBackends(u32),
    /// A copy of each request (of a share of them) is sent to each of these
    /// too, and its answer dropped (Gateway API's RequestMirror).
    Mirror(Vec<Mirror>),
    /// The route's second backend is a canary, chosen by these rules.
    Canary(Canary),
    /// New sessions go to the endpoint with the fewest requests in flight
    /// (ingress-nginx's `load-balance: ewma`, approximated).
    LeastLoaded,
    /// How requests reach the endpoints: TLS, HTTP/2 (ingress-nginx's
    /// `backend-protocol` HTTPS, GRPC, GRPCS and `proxy-ssl-*`).
    UpstreamProtocol(UpstreamProtocol),
    /// New sessions go to the endpoint this key hashes to on a consistent
    /// ring (ingress-nginx's `upstream-hash-by`): nginx variables such as
    /// `$request_uri`, `$remote_addr`, `$http_x_user`, `$cookie_id`, `$arg_id`.
    HashBy(HashBy),
    /// Request bodies beyond this get 413, instead of `limits.max_body_bytes`;
    /// `u64::MAX` is unlimited.
    MaxBodyBytes(u64),
    /// Towards the endpoints, instead of `timeouts`.
    Timeouts(TimeoutOverrides),
    /// Cookie session affinity.
    Affinity(Affinity),
    /// ingress-nginx's `default-backend` with `custom-http-errors`.
    ErrorBackend(ErrorBackend),
    /// Cross-origin requests: preflights answered here, the headers added to
    /// responses (ingress-nginx's `enable-cors` and `cors-*`).
    Cors(Cors),
    /// Every request is first asked of an auth service (ingress-nginx's
    /// `auth-url` and friends).
    ExternalAuth(ExternalAuth),
    /// Users and password hashes a request must match (ingress-nginx's
    /// `auth-type: basic`).
    BasicAuth(BasicAuth),
    /// Request rates and requests in flight per client address
    /// (ingress-nginx's `limit-rps`, `limit-rpm`, `limit-connections`).
    ClientLimits(RouteLimits),
    /// Response bandwidth per request (ingress-nginx's `limit-rate`).
    ResponseRate(ResponseRate),
}

/// Where copies of requests go, and which share of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub upstream: UpstreamKey,
    /// `numerator` of every `denominator` requests (1 of 1: all).
    pub numerator: u32,
    pub denominator: u32,
}

/// Header changes, applied in the order set, add, remove (as Gateway API
/// lists them). Names lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderChanges {
    /// Replace any value the message has.
    pub set: Vec<(String, String)>,
    /// Append to the values it has.
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// How a path is replaced (Gateway API's HTTPPathModifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// The whole path.
    Full(String),
    /// The route's matched Prefix (`prefix`, normalized as the match is) is
    /// replaced by `with`, by whole path elements: `/foo` -> `/bar` makes
    /// `/foo/x` `/bar/x`; with `/`, `/foo/x` becomes `/x`.
    Prefix { prefix: String, with: String },
}

/// A redirect built from the request's URL: each part given replaces the
/// request's own. The query is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTo {
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    /// `None`: the port the scheme implies (as Gateway API says: the
    /// listener's port when neither is given and it is not the well-known one).
    pub port: Option<u16>,
    pub path: Option<PathChange>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

/// What is sent upstream instead of the request's host and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteUrl {
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
}

/// Basic authentication against a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Shown by browsers in the login prompt.
    pub realm: String,
    /// Where the users come from (`Secret default/team`), for logs and checks.
    pub source: String,
    /// (user, hash) as htpasswd writes them.
    pub users: Vec<(String, String)>,
}

/// Per-client limits of a route, counted per zone: routes with the same zone
/// (one Ingress's) share the counts, as ingress-nginx's zones do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimits {
    pub zone: String,
    /// Each must admit a request.
    pub rates: Vec<RequestRate>,
    /// Requests in flight per client.
    pub connections: Option<u32>,
    /// Clients no limit applies to.
    pub exempt: Vec<IpNet>,
}

/// `requests` per `per` with `burst` more at once (nginx's `limit_req` with
/// `burst` and `nodelay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    pub requests: u32,
    pub per: std::time::Duration,
    pub burst: u32,
}

/// Response bodies are sent at most this fast, after the first `after_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRate {
    pub bytes_per_second: u64,
    pub after_bytes: u64,
}

/// ingress-nginx's external authentication, as its annotations write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuth {
    /// `http(s)://host[:port]/path?query`; nginx variables (`$host`,
    /// `$request_uri`, ...) are expanded per request.
    pub url: String,
    /// `auth-method`: the sub-request's method.
    pub method: String,
    /// `auth-signin`: where a 401 redirects (302) instead.
    pub signin: Option<String>,
    /// `auth-signin-redirect-param`: the parameter that carries the original URL.
    pub signin_redirect_param: String,
    /// `auth-response-headers`: copied from the auth answer to the request.
    pub response_headers: Vec<String>,
    /// `auth-request-redirect`: `X-Auth-Request-Redirect` instead of the request URI.
    pub request_redirect: Option<String>,
    /// `auth-cache-key`: answers are kept per value of this template (nginx
    /// variables), for `cache_for`.
    pub cache_key: Option<String>,
    /// `auth-cache-duration`: how long answers with these codes are kept.
    pub cache_for: Vec<(Vec<u16>, Duration)>,
    /// `auth-always-set-cookie`: the auth answer's `Set-Cookie` goes on every
    /// response, not only on successes and redirects.
    pub always_set_cookie: bool,
    /// `auth-proxy-set-headers`: the name of a ConfigMap of headers for the
    /// sub-request, and (read by translation) those headers.
    pub proxy_set_headers: Option<String>,
    pub set_headers: Vec<(String, String)>,
}

/// What a route allows cross-origin, as ingress-nginx writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `*` alone: any origin (answered `*`). Else `scheme://host[:port]`
    /// (one `*` label allowed, as `https://*.example.com`) or `null`, matched
    /// whole and case-insensitively. Empty: no origin.
    pub allow_origins: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    /// Empty: no `Access-Control-Expose-Headers`.
    pub expose_headers: String,
    pub allow_credentials: bool,
    /// Seconds, `Access-Control-Max-Age`.
    pub max_age: u32,
}

/// Another Service that serves a route's requests when its own has no ready
/// endpoint (with `X-Code: 503`), and its error pages for `intercept` codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBackend {
    pub upstream: UpstreamKey,
    /// Responses with these codes (the endpoint's or the proxy's own) are
    /// replaced by the error backend's answer for them.
    pub intercept: Vec<u16>,
}

/// A consistent-hash key and how many endpoints it may spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashBy {
    /// The key's template (nginx variables).
    pub key: String,
    /// 1: the key's endpoint; N (`upstream-hash-by-subset`): one of the N
    /// distinct endpoints that follow the key on the ring, in turn.
    pub subset: u16,
}

/// How a route talks to its endpoints when not plain HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamProtocol {
    /// TLS to the endpoints.
    pub tls: bool,
    /// HTTP/2 only: by ALPN over TLS, with prior knowledge (h2c) without.
    pub http2: bool,
    /// Verify the endpoint's certificate (against the system's roots).
    pub verify: bool,
    /// The name the certificate must carry (and, with `sni`, the SNI sent);
    /// `None`: the Service's DNS name, `SERVICE.NAMESPACE.svc`.
    pub name: Option<String>,
    /// Send the name as SNI.
    pub sni: bool,
    /// CA certificates and a client certificate from a Secret
    /// (`proxy-ssl-secret`), instead of the system's roots and no client
    /// certificate.
    pub trust: Option<Arc<UpstreamTrust>>,
}

/// What a Secret gives a TLS connection to the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTrust {
    /// Where it came from, for messages: `Secret NAMESPACE/NAME`.
    pub source: String,
    /// The CA certificates (DER) the endpoints' certificates must chain to.
    pub ca: Vec<Vec<u8>>,
    /// A client certificate chain (DER, leaf first) and its key (DER), sent
    /// when the endpoint asks for one.
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
}

/// A redirect answer. `location` may use `$scheme`, `$host`, `$request_uri`
/// (path and query as sent), `$uri` (the path) and `$args` (the query), as
/// nginx's `return` does; anything else is sent as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub location: String,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

/// nginx's `rewrite "(?i)PATTERN" TARGET break;`: when the path matches
/// `pattern` (case-insensitive, anywhere), the whole path becomes `target`
/// with `$1`..`$9` replaced by the match's groups; the query string is kept
/// (appended with `&` when the target has one of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub pattern: String,
    pub target: String,
}

/// ingress-nginx's canary rules, in their precedence: the header, then the
/// cookie, then the weight.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canary {
    /// `always` sends to the canary, `never` to the main backend; with
    /// `header_value` (or `header_pattern`, a regular expression) that value
    /// sends to the canary instead; any other value falls through.
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub header_pattern: Option<String>,
    /// `always` / `never`, as the header; other values fall through.
    pub cookie: Option<String>,
    /// Out of `weight_total`, the share of the remaining requests.
    pub weight: u32,
    pub weight_total: u32,
}

/// The regular expression of a [`Rewrite`]: case-insensitive, unanchored.
pub fn rewrite_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("{pattern:?} is not a regular expression: {e}"))
}

/// Per-route timeouts; `None` keeps the global one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    /// The whole exchange, from the request's arrival to the response's end
    /// (Gateway API's `timeouts.request`): no response head by then is a 504;
    /// a body still arriving then is cut. `None`: no such limit.
    pub request: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    /// `None`: a session cookie.
    pub max_age: Option<Duration>,
    pub path: String,
    /// An `Expires` this long after the response.
    pub expires: Option<Duration>,
    pub same_site: Option<SameSite>,
    /// `SameSite=None` left out for clients known to mishandle it.
    pub same_site_none_if_compatible: bool,
    /// `Secure` on plain HTTP too (it is always set on HTTPS).
    pub secure: bool,
    pub domain: Option<String>,
    /// When the pinned endpoint fails, the client is re-pinned with a new
    /// cookie (`true`), or served elsewhere and keeps its cookie (`false`), to
    /// return to its endpoint once it is back.
    pub change_on_failure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

impl Affinity {
    /// The configuration file's affinity: `Path=/`, `SameSite=Lax`, re-pinned on failure.
    pub fn new(cookie: impl Into<String>, max_age: Option<Duration>) -> Self {
        Affinity {
            cookie: cookie.into(),
            max_age,
            path: "/".into(),
            expires: None,
            same_site: Some(SameSite::Lax),
            same_site_none_if_compatible: false,
            secure: false,
            domain: None,
            change_on_failure: true,
        }
    }
}
