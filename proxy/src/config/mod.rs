//! Configuration: loading the YAML file and validating it into the types below.
//!
//! A file that parses is not yet a valid configuration: `load` always runs the
//! validation step and reports every problem with the path of its field
//! (`routes[2].port: ...`), all at once.

mod file;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A validated configuration. The proxy never re-checks what is here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Listen,
    pub admin: Option<SocketAddr>,
    pub discovery: Discovery,
    pub tls: Vec<TlsCert>,
    pub routes: Vec<Route>,
    pub timeouts: Timeouts,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How many other endpoints to try when connecting to one fails.
    pub retries: usize,
    /// How long in-flight requests get after SIGTERM.
    pub drain_timeout: Duration,
    pub logging: Logging,
    pub limits: Limits,
    /// Clients whose X-Forwarded-For is kept (other proxies, load balancers).
    pub trusted_proxies: Vec<IpNet>,
    /// Serve Ingress objects too (`discovery: kubernetes` only).
    pub ingress: Option<IngressSettings>,
}

/// `ingress:` (DESIGN.md, "Ingress"). Read at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// The IngressClass served.
    pub class: String,
    /// Write `status.loadBalancer` of the served Ingresses.
    pub publish_status: bool,
    /// The label selector of the proxy's own pods, whose Nodes are the addresses.
    pub publish_selector: String,
    /// When not empty: these addresses (IPs or host names) instead of node IPs.
    pub publish_addresses: Vec<String>,
}

impl IngressSettings {
    /// The controller name an IngressClass of ours carries in `spec.controller`.
    pub const CONTROLLER: &'static str = "edge-proxy.io/ingress-controller";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers together; beyond: 431.
    pub max_header_bytes: usize,
    /// Header fields; beyond: 431.
    pub max_headers: usize,
    /// Request body; beyond: 413.
    pub max_body_bytes: u64,
    /// A request head must be complete this long after the connection opened
    /// (or, on a kept-alive connection, after `idle_timeout` more): slowloris.
    pub header_timeout: Duration,
    /// How long a kept-alive client connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open client connections per proxy process; more wait for a free slot
    /// for `header_timeout`, then are closed. Read at start only.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// An address range of `trusted_proxies`, like `10.0.0.0/8` or `2001:db8::/32`
/// (the `ipnet` crate's type).
pub use ipnet::IpNet;

/// Whether `net` holds `ip`; an IPv4-mapped IPv6 client (`::ffff:10.0.0.1`, as
/// a dual-stack listener reports it) matches IPv4 ranges.
pub fn net_contains(net: &IpNet, ip: std::net::IpAddr) -> bool {
    net.contains(&ip.to_canonical())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Logging {
    /// Lifecycle and error logs (stderr).
    pub format: LogFormat,
    /// The access log (stdout); `None` is off.
    pub access: Option<LogFormat>,
}

impl Logging {
    pub const DEFAULT: Logging = Logging {
        format: LogFormat::Json,
        access: Some(LogFormat::Json),
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// Watch EndpointSlices of the routes' Services.
    Kubernetes,
    /// Resolve a name per Service; the template holds `{service}` and `{namespace}`.
    Dns { name_template: String },
    /// Fixed endpoints per service name.
    Static(BTreeMap<String, Vec<SocketAddr>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsCert {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: HostMatch,
    /// For `Prefix`, normalized without a trailing slash (except the root "/").
    pub path: String,
    pub path_type: PathType,
    pub upstream: UpstreamKey,
    pub affinity: Option<Affinity>,
    /// Plain-HTTP requests get a 308 to the same URL on https.
    pub redirect_https: bool,
    /// Settings only Ingress annotations give; `Default` for ConfigMap routes.
    pub overrides: RouteOverrides,
}

/// Per-route settings beyond the global ones (from Ingress annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOverrides {
    /// Instead of `limits.max_body_bytes`; `Some(u64::MAX)` is unlimited.
    pub max_body_bytes: Option<u64>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// Only clients in these ranges; others get 403. `Some(empty)`: nobody
    /// (an allowlist that did not parse fails closed).
    pub allow: Option<Vec<IpNet>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// A lowercase host name.
    Exact(String),
    /// `*.example.com`: holds "example.com"; matches exactly one more label.
    Wildcard(String),
    /// No host given: any host that no other route names.
    Any,
}

/// As written in a route: `www.example.com`, `*.example.com`, or `*` for any host.
impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(d) => write!(f, "*.{d}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathType {
    Prefix,
    Exact,
}

/// What a route forwards to: one port of one Service. Routes naming the same
/// key share one set of endpoints, one balancer and one connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamKey {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    /// `None`: a session cookie.
    pub max_age: Option<Duration>,
    /// The rest is what ingress-nginx's `session-cookie-*` annotations set;
    /// [`Affinity::new`] gives the ConfigMap routes' fixed behaviour.
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
    /// A ConfigMap route's affinity: `Path=/`, `SameSite=Lax`, re-pinned on failure.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
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

/// One problem in a configuration: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// A configuration file as loaded: the validated configuration and a hash of
/// the file's bytes (shown in `edge_proxy_config_info`, and how a reload
/// notices a change).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub hash: u64,
}

/// Read and validate the configuration file at `path`: the one way `check`,
/// start-up and reloads read it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        source_name: name.clone(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    Ok(Loaded {
        config: from_bytes(&name, &bytes)?,
        hash: content_hash(&bytes),
    })
}

/// Validate a configuration file's bytes (a reload hashes them itself first,
/// to see whether they changed). YAML is UTF-8 text: anything else is a
/// problem, named with the offset of the first bad byte.
pub fn from_bytes(source_name: &str, bytes: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError {
        source_name: source_name.to_string(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("not UTF-8 text: invalid byte at offset {}", e.valid_up_to()),
        }],
    })?;
    parse(source_name, text)
}

/// A stable hash of a file's bytes (SipHash-1-3, fixed keys).
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(bytes);
    h.finish()
}

/// A route host as an Ingress rule writes it, or why it is not one.
pub fn route_host(host: &str) -> Result<HostMatch, String> {
    validate::route_host(host)
}

/// A route path, normalized as `routes[].path` is, or why it is not one.
pub fn route_path(path: &str, path_type: PathType) -> Result<String, String> {
    validate::route_path(path, path_type)
}

/// A Service or namespace name (RFC 1123 label).
pub fn is_dns_label(s: &str) -> bool {
    validate::is_dns_label(s)
}

/// A cookie name (an HTTP token of at most 64 bytes).
pub fn is_cookie_name(s: &str) -> bool {
    validate::is_cookie_name(s)
}

/// A Service port name.
pub fn is_port_name(s: &str) -> bool {
    validate::is_port_name(s)
}

/// Parse and validate configuration text; `source_name` names it in errors.
pub fn parse(source_name: &str, text: &str) -> Result<Config, ConfigError> {
    validate::parse(text).map_err(|problems| ConfigError {
        source_name: source_name.to_string(),
        problems,
    })
}
